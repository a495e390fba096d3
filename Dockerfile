# syntax=docker/dockerfile:1
#
# Sentiment service image, three stages:
#   artifact  torch + transformers export the model to ONNX and quantize it (int8 if it passes the gate)
#   venv      the runtime dependencies only ([project].dependencies), in /opt/venv
#   runtime   python:3.11-slim + /opt/venv + the artifact; no torch, no transformers, no compilers
#
# Every package comes from a lock in requirements/ (versions and hashes, `make lock`), the same
# locks the tests install, and every stage starts from one base image pinned by digest (the
# tag beside it says what the digest is; `docker buildx imagetools inspect python:3.11-slim`
# gives the current one). A build of one commit installs the same bytes every time.
#
# Build: ./build-push.sh (tags with the commit, pushes, updates the prod overlay), or by hand:
#   docker buildx build --platform linux/amd64 -t sentiment:dev --load .

# The base image of every stage: the tag, and the digest it had when last raised (its index,
# so the same pin serves linux/amd64 and the other platforms): python:3.11.16, Debian 13.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:1042b61448fef4ba92d16a8c7eb4996d027568ce64792a7877fd88511e0af7c6

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
FROM ${PYTHON_IMAGE} AS artifact
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/root/.cache/huggingface
WORKDIR /build
# The runtime set plus the `build` extra, before the code so editing model/ does not reinstall
# them. The lock pins torch==2.13.0+cpu, a wheel only PyTorch's CPU index has (PyPI's torch pulls
# in gigabytes of CUDA libraries); pip takes each file from whichever index has its locked hash.
COPY requirements/build.txt requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps \
      --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/build.txt
COPY model/ model/
ARG MODEL_ID
ARG MODEL_REVISION
ARG MODEL_PRECISIONS
# The hub download is kept in a BuildKit cache mount, so a code change does not fetch it again.
RUN --mount=type=cache,target=/root/.cache/huggingface \
    python -m model build --model-id "$MODEL_ID" --revision "$MODEL_REVISION" --precision "$MODEL_PRECISIONS" --out /artifact

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_LINK_MODE=copy \
    INSTALLER_DIR=/opt/uv \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/opt/uv/bin:$PATH
WORKDIR /src
# Dependencies first (this layer survives code edits): exactly the runtime lock, installed by
# the installer `make` uses (itself locked), which stays out of /opt/venv and so of the image.
COPY requirements/installer.txt requirements/runtime.txt requirements/
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir --require-hashes --no-deps --target "$INSTALLER_DIR" -r requirements/installer.txt
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip sync --require-hashes --python "$VIRTUAL_ENV/bin/python" requirements/runtime.txt
COPY pyproject.toml README.md app.py openapi.py ./
COPY model/ model/
# Then the service itself (app + model package) into site-packages. Bytecode is compiled now,
# with hashes that are never re-checked, so a cold start reads .pyc files instead of compiling
# (the runtime user cannot write them, and file times change when layers are copied).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --no-deps --python "$VIRTUAL_ENV/bin/python" . \
 && python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash "$VIRTUAL_ENV"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
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
