"""A predict check of one 1,024 px tile through the API (`bash bench/run.sh predict`): upload -> queue -> worker ->
model -> boxes and preview stored -> seen succeeded by the client, on the bench's trained model.

- Warm: the worker keeps the model loaded in its warm child (``engine.warm``, the default); the first check of the
  model loads it, the checks after it are measured. p50 and p95.
- Cold: the same checks with warm models off (``DUMPSITE_WARM_MODELS=0``): a new child process per check, which
  starts, imports torch and MMDetection and loads the model each time, as every check did before. p50.
"""

from __future__ import annotations

import io
import time

import numpy as np

from .common import Cluster, Figure, median, percentile

WARM_CHECKS = 15
COLD_CHECKS = 5
SIZE = 1024


def tile() -> bytes:
    """A 1,024 px demo-like tile with three piles, as JPEG."""
    from PIL import Image

    from datasets.demo import background, paint_object

    rng = np.random.default_rng(31)
    canvas = background(rng, SIZE)
    for x, y in ((200, 240), (610, 380), (420, 760)):
        paint_object(canvas, rng, 0, x, y, 90, 80)
    out = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def check(client, model, picture: bytes) -> tuple[float, dict]:
    """One check, from the upload's start to the client seeing it end: (seconds, its result)."""
    from models_registry.models import Prediction

    upload = io.BytesIO(picture)
    upload.name = "tile.jpg"
    start = time.perf_counter()
    response = client.post(f"/api/trained-models/{model.pk}/predict/", {"image": upload})
    assert response.status_code == 202, response.content
    pk = response.json()["id"]
    while not Prediction.objects.filter(pk=pk, status__in=("succeeded", "failed")).exists():
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    done = Prediction.objects.get(pk=pk)
    if done.status != "succeeded":
        raise RuntimeError(f"bench predict check {pk} failed: {done.error_message}")
    return seconds, done.result


def run() -> list[Figure]:
    from .evaluation import _model
    from .training import trainer_session

    _user, dataset, client = trainer_session()
    model = _model(client, dataset)
    picture = tile()
    with Cluster("qcluster-predict.log", DUMPSITE_WARM_MODELS="2") as cluster:
        first, result = check(client, model, picture)
        assert not result["warm"], result
        warm = []
        for _ in range(WARM_CHECKS):
            seconds, result = check(client, model, picture)
            assert result["warm"] and (result["width"], result["height"]) == (SIZE, SIZE), result
            warm.append(seconds)
        cluster.wait_idle(0.5)
    print(f"  warm: first {first:.2f} s, then p50 {median(warm):.2f} s", flush=True)
    with Cluster("qcluster-predict.log", DUMPSITE_WARM_MODELS="0"):
        cold = [check(client, model, picture)[0] for _ in range(COLD_CHECKS)]
    print(f"  cold: p50 {median(cold):.2f} s", flush=True)
    return [
        Figure(
            "predict",
            f"predict check of a {SIZE} px tile through the API on a warm worker, p50 / p95 of {WARM_CHECKS}",
            f"{median(warm):.2f} s / {percentile(warm, 0.95):.2f} s",
            "p50 <= 1 s",
            median(warm) <= 1.0,
        ),
        Figure(
            "predict",
            f"the same check with a new child per check (warm models off), p50 of {COLD_CHECKS}; the warm child's "
            "first check of the model",
            f"{median(cold):.2f} s; {first:.2f} s",
            "informative",
            None,
        ),
    ]
