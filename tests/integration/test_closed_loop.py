"""The loop closed, end to end, with the real server and real vLLM engines:
serve slates with a trained model, report impressions and clicks, train a
new model from the feedback log, hot-swap it in under load and see its
model_id on the next slates; a model that cannot load never takes traffic;
roll back with one call.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import grpc
import pytest

from conftest import REPO, start_server, stop_server
from slatewise.catalogue.loader import embedded_catalogue_path, load_jsonl
from slatewise.feedback.records import FeedbackEvent, ServedSlate, read_log
from slatewise_client import SlateClient, build_event, build_request
from slatewise_client.pb import slate_pb2 as pb

pytestmark = pytest.mark.model
MODEL = "slatewise.v1.Model"
CATALOGUE = {it.id: it for it in load_jsonl(embedded_catalogue_path())}
FAST = ["--epochs", "2", "--threads", "1", "--max-valid-users", "100", "--patience", "1",
        "--max-history", "10"]


def _train(out, *inputs, seed=0):
    done = subprocess.run([sys.executable, "-m", "slatewise", "train", *inputs,
                           "--catalogue", str(embedded_catalogue_path()), "--out", str(out), "--json",
                           "--seed", str(seed), *FAST], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    models = root / "models"
    log = root / "interactions.jsonl"
    subprocess.run([sys.executable, "-m", "slatewise.training.synthetic", "--out", str(log)],
                   check=True, cwd=REPO, capture_output=True)
    first = _train(models / "slates-v1", "--interactions", str(log))
    feedback = root / "feedback"
    server = start_server(root, "--model", str(first), "--feedback-dir", str(feedback),
                          "--model-swap-root", str(models),
                          wait_for=MODEL, timeout=400)
    yield server, models, log, feedback
    stop_server(server)


def _metric(server, name: str) -> str:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    return "\n".join(line for line in body.splitlines() if line.startswith(name))


def test_feedback_trains_a_model_that_is_hot_swapped_in_under_load(loop):
    server, models, log, feedback = loop
    rng = random.Random(0)
    ids = sorted(CATALOGUE)
    with SlateClient(server.target) as client:
        assert client.model_status().model_id == "slates-v1"
        # Users shown slates; each clicks what is in their favourite category.
        events = []
        for u in range(40):
            favourite = ("tops", "shoes", "bottoms", "accessories")[u % 4]
            history = rng.sample(ids, 3)
            slate = client.recommend(request=build_request("", 6, history=history, exclude_ids=history,
                                                           strategy="model", user_id=f"u{u}"))
            assert slate.strategy == pb.STRATEGY_MODEL and slate.model_id == "slates-v1"
            events.append(build_event(f"imp-{u}", slate.slate_id, "impression", user_id=f"u{u}"))
            for pos, item in enumerate(slate.items):
                if CATALOGUE[item.item_id].category == favourite:
                    events.append(build_event(f"clk-{u}-{pos}", slate.slate_id, "click", [item.item_id],
                                              positions=[pos], user_id=f"u{u}"))
        assert client.report_events(events).accepted == len(events)

    records = list(read_log(feedback))
    assert sum(isinstance(r, ServedSlate) for r in records) >= 40
    assert sum(isinstance(r, FeedbackEvent) for r in records) == len(events)

    # Train from the feedback log (beside the interaction log), while the server serves.
    _train(models / "slates-v2", "--interactions", str(log), "--events", str(feedback), seed=1)

    # Hot-swap under load: 4 callers on the model path the whole time.
    served: list[tuple[str, int]] = []
    failures: list[str] = []
    stop = threading.Event()

    def caller(n: int) -> None:
        with SlateClient(server.target) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    s = c.recommend(request=build_request("", 5, history=[ids[(n * 7 + i) % len(ids)]],
                                                          strategy="model", diversity=0.5), deadline=60)
                    served.append((s.model_id, s.strategy))
                except grpc.RpcError as err:
                    failures.append(f"{err.code().name}: {err.details()}")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        with SlateClient(server.target) as client:
            status = client.load_model("slates-v2", deadline=600, shadow_requests=6)
            assert (status.model_id, status.previous_model_id, status.switches) == ("slates-v2", "slates-v1", 1)
            # Compared with the serving model on the latest requests before the switch.
            assert status.shadow.requests == 6 and 0.0 <= status.shadow.mean_overlap <= 1.0
            assert -1.0 <= status.shadow.mean_category_coverage_delta <= 1.0
            before = len(served)
            after_switch = client.recommend(request=build_request("", 5, history=[ids[0]], strategy="model"))
            assert after_switch.model_id == "slates-v2"
            time.sleep(3)  # the new model under the same load for a while
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    by_model = Counter(m for m, _ in served)
    print(json.dumps({"hot_swap_under_load": {"slates": len(served), "failures": len(failures),
                                              "by_model": by_model, "load_seconds": status.last_load_seconds,
                                              "shadow_overlap": status.shadow.mean_overlap}}))
    assert not failures, failures[:5]
    assert set(by_model) <= {"slates-v1", "slates-v2"}, by_model  # every slate from exactly one model
    assert by_model["slates-v1"] and by_model["slates-v2"], by_model
    assert all(strategy == pb.STRATEGY_MODEL for _, strategy in served)
    assert "slates-v1" not in {m for m, _ in served[before + 8:]}  # once switched, new slates are v2
    assert 'model_id="slates-v2"' in _metric(server, "slatewise_model_slates_total")
    assert 'kind="load"' in _metric(server, "slatewise_model_switches_total")
    assert _metric(server, "slatewise_candidate_shadow_overlap_count").split()[-1] == "6.0"


def test_a_model_that_cannot_load_never_takes_traffic_and_rollback_is_one_call(loop):
    server, models, _, _ = loop
    broken = models / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text("{not json")
    with SlateClient(server.target) as client:
        serving = client.model_status().model_id
        for path, words in (("broken", "not switched"), ("../..", "outside the model swap root"),
                            ("missing", "not a directory")):
            with pytest.raises(grpc.RpcError) as err:
                client.load_model(path, deadline=600)
            assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION and words in err.value.details()
        assert client.model_status().model_id == serving
        slate = client.recommend(request=build_request("", 4, history=[sorted(CATALOGUE)[1]], strategy="model"))
        assert slate.model_id == serving and slate.strategy == pb.STRATEGY_MODEL
        assert client.health(MODEL) == "SERVING"

        status = client.rollback_model(deadline=600)
        assert status.model_id == status.path.rsplit("/", 1)[-1] != serving
        assert status.previous_model_id == serving
        slate = client.recommend(request=build_request("", 4, history=[sorted(CATALOGUE)[1]], strategy="model"))
        assert slate.model_id == status.model_id
    assert _metric(server, "slatewise_model_load_failures_total").split()[-1] != "0.0"
