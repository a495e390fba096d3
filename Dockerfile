# syntax=docker/dockerfile:1
#
# Sentiment service image, three stages:
#   artifact  torch + transformers export the model to ONNX and quantize it (int8 if it passes the gate)
#   venv      the runtime dependencies only ([project].dependencies), in /opt/venv
#   runtime   python:3.11-slim + /opt/venv + the artifact; no torch, no transformers, no compilers
#
# Base images are pinned by tag, which follows Debian and CPython patch releases. For a
# byte-for-byte reproducible build, pin the digest as well and let a bot raise it:
#   FROM python:3.11-slim@sha256:<digest>   (docker buildx imagetools inspect python:3.11-slim)
#
# Build: ./build-push.sh (tags with the commit, pushes, updates the prod overlay), or by hand:
#   docker buildx build --platform linux/amd64 -t sentiment:dev --load .

# The model baked into the image. The revision is the hub commit that transformers' own
# sentiment-analysis pipeline pins, so the weights cannot change under a rebuild.
ARG MODEL_ID=distilbert-base-uncased-finetuned-sst-2-english
ARG MODEL_REVISION=714eb0fa89d2f80546fda750413ed43d93601a13
# ONNX precisions shipped. Default: int8 only, when the model passes the build's int8 gate (else the
# build ships fp32 and says why); the service serves what the manifest recommends. The image is
# pulled on every scale-from-zero, and fp32 is ~270 MB of DistilBERT's artifact: add it with
# --build-arg MODEL_PRECISIONS=fp32,int8 to make PRECISION=fp32 a deploy-time switch.
ARG MODEL_PRECISIONS=int8

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS artifact
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/root/.cache/huggingface
WORKDIR /build
# CPU-only torch from PyTorch's own index: the PyPI wheel pulls in gigabytes of CUDA libraries.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
# Dependencies before code, so editing model/ does not reinstall them. The list is the runtime
# set plus the `build` extra, read from pyproject.toml (torch==2.13.0 there is already satisfied).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['build'], sep=chr(10))" > build-requirements.txt \
 && pip install --no-cache-dir -r build-requirements.txt
COPY model/ model/
ARG MODEL_ID
ARG MODEL_REVISION
ARG MODEL_PRECISIONS
# The hub download is kept in a BuildKit cache mount, so a code change does not fetch it again.
RUN --mount=type=cache,target=/root/.cache/huggingface \
    python -m model build --model-id "$MODEL_ID" --revision "$MODEL_REVISION" --precision "$MODEL_PRECISIONS" --out /artifact

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
# Dependencies first (this layer survives code edits): exactly [project].dependencies.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], sep=chr(10))" > runtime-requirements.txt \
 && pip install --no-cache-dir -r runtime-requirements.txt
COPY app.py openapi.py ./
COPY model/ model/
# Then the service itself (app + model package) into site-packages. Bytecode is compiled now,
# with hashes that are never re-checked, so a cold start reads .pyc files instead of compiling
# (the runtime user cannot write them, and file times change when layers are copied).
RUN pip install --no-cache-dir --no-deps . \
 && python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash "$VIRTUAL_ENV"

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ARG MODEL_ID
ARG MODEL_REVISION
ARG VCS_REF=unknown
ARG SOURCE_URL=unknown
LABEL org.opencontainers.image.title="sentiment" \
      org.opencontainers.image.description="Sentiment-analysis inference service (Flask, Gunicorn, ONNX Runtime)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="$SOURCE_URL" \
      org.opencontainers.image.revision="$VCS_REF" \
      io.sentiment-service.model.id="$MODEL_ID" \
      io.sentiment-service.model.revision="$MODEL_REVISION"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MODEL_DIR=/models/sentiment \
    PORT=8080
# The slim base ships its standard library without bytecode (to stay small), so every process
# would compile what it imports on each cold start: compile it once here. Then a fixed,
# numeric non-root user, so `runAsNonRoot` can be verified by the kubelet.
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /usr/local/lib/python3.11 \
 && groupadd --system --gid 10001 sentiment \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sentiment
COPY --from=venv /opt/venv /opt/venv
COPY --from=artifact /artifact /models/sentiment
WORKDIR /app
COPY gunicorn.conf.py ./
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: Kubernetes ignores it. Knative's queue-proxy probes GET /ready (readiness) and
# the kubelet GET /health (liveness), as declared in the Knative Service.
# Exec form: Gunicorn is PID 1 and receives SIGTERM itself, to drain in-flight requests.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
