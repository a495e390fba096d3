"""The seed-style service the benchmark compares with: FastAPI + a transformers pipeline + a
whole-response Redis cache, the way such a service is commonly first written.

    MODEL_DIR=CHECKPOINT REDIS_URL=redis://127.0.0.1:6379/0 uvicorn --app-dir k6/yardsticks seed:app

It answers POST /predict with the same body and answer shape as the service (every label with
its score, highest first; X-Cache hit or miss), so the same k6 scenarios and checks run against
both. The cache key is the hash of the whole body: a request is a hit only if the same list of
texts was sent before. Requests run in FastAPI's thread pool; the pipeline runs on torch.
"""

import hashlib
import json
import os

import redis
from fastapi import FastAPI, Request, Response
from transformers import pipeline

app = FastAPI()
classifier = pipeline("text-classification", model=os.environ["MODEL_DIR"], top_k=None, device="cpu")
cache = redis.Redis.from_url(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else None
MODEL = f"seed@{os.path.basename(os.environ['MODEL_DIR'].rstrip('/'))}"
TTL_SECONDS = 86400


@app.post("/predict")
def predict(body: dict, request: Request) -> Response:
    texts = body["text"] if isinstance(body["text"], list) else [body["text"]]
    key = "seed:" + hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    cached = cache.get(key) if cache is not None else None
    if cached is not None:
        return Response(cached, media_type="application/json", headers={"X-Cache": "hit"})
    predictions = [[{"label": p["label"], "score": p["score"]} for p in ranked] for ranked in classifier(texts)]
    answer = json.dumps({"predictions": predictions, "model": MODEL}).encode()
    if cache is not None:
        cache.set(key, answer, ex=TTL_SECONDS)
    return Response(answer, media_type="application/json", headers={"X-Cache": "miss" if cache else "bypass"})
