"""The device run queue on its own (no server involved): batching picks the requests
that match the head out of a queue that also holds requests that do not."""

from __future__ import annotations

import threading

import numpy as np

from gears.ai.runner import DeviceQueue, RunRequest


class _Model:
    """A model whose ``run`` doubles its input and records the batch sizes it saw."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(inputs[0].shape[0])
        return [inputs[0] * 2]


def test_batching_skips_requests_of_other_shapes_and_keeps_serving():
    queue = DeviceQueue("CPU", threads=1)
    gate = threading.Event()
    blocker = RunRequest(target=None, fn=lambda _: [gate.wait(30)], inputs=[])
    queue.submit(blocker)
    model = _Model()
    # fn is the same bound method for every request, as for AI.MODELEXECUTE of one model
    requests = [
        RunRequest(target=model, fn=model.run, inputs=[np.full((1, width), n, dtype=np.int64)], batchsize=8)
        for n, width in enumerate((4, 6, 4, 6, 4))
    ]
    for request in requests:
        queue.submit(request)
    gate.set()
    for request in requests:
        assert request.done.wait(30), "a request was never served"
        assert request.error is None
    for n, request in enumerate(requests):
        assert np.array_equal(request.outputs[0], request.inputs[0] * 2), f"request {n} got another's slice"
    assert sorted(model.batches) == [2, 3]  # the three width-4 requests together, the two width-6 together
    after = RunRequest(target=model, fn=model.run, inputs=[np.ones((1, 4), dtype=np.int64)], batchsize=8)
    queue.submit(after)
    assert after.done.wait(30) and after.error is None
