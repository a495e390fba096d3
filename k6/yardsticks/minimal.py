"""The yardstick of the hot-cache benchmark: the least a Flask handler of /predict can do.

It parses the same JSON body and answers a fixed two-label prediction per text, with no
validation, cache, model or metrics, so its req/s under the same Gunicorn settings is what
the framework and server allow on this machine:

    gunicorn --chdir k6/yardsticks -k gthread --threads 32 minimal:app
"""

import json

from flask import Flask, Response, request

app = Flask(__name__)
FIXED = [{"label": "POSITIVE", "score": 0.75}, {"label": "NEGATIVE", "score": 0.25}]


@app.post("/predict")
def predict() -> Response:
    texts = json.loads(request.get_data())["text"]
    body = json.dumps({"predictions": [FIXED] * len(texts), "model": "minimal"})
    return Response(body, mimetype="application/json", headers={"X-Cache": "hit"})
