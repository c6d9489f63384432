"""Why an attempt failed, and whether another attempt may succeed."""

from __future__ import annotations


class AttemptFailure(Exception):
    """An attempt that ends in JobAttemptFailed; `reason` is a machine-readable code."""

    def __init__(self, reason: str, detail: str, *, retryable: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:2000]
        self.retryable = retryable


class JobCanceledError(Exception):
    """The job was canceled; raised at the end of the step during which the cancel arrived."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"canceled after step {step} of {total}")
        self.step = step
        self.total = total


class ModelDirectoryMissingError(RuntimeError):
    """A served workflow's model directory is absent: the runner must not start."""


_DEVICE_LOST_MARKERS = (
    "cuda error",
    "device-side assert",
    "cublas_status",
    "cudnn_status",
    "nccl",
    "device lost",
    "an illegal memory access",
)


def classify(error: BaseException) -> AttemptFailure:
    """Out of memory or a lost device: retryable; anything else unexpected: retryable too,
    since jobs caps retries, while known-bad input is raised as a permanent AttemptFailure."""
    if isinstance(error, AttemptFailure):
        return error
    name = type(error).__name__
    message = str(error)
    if name == "OutOfMemoryError" or "out of memory" in message.lower():
        return AttemptFailure("gpu_out_of_memory", message, retryable=True)
    if (
        any(marker in message.lower() for marker in _DEVICE_LOST_MARKERS)
        or name == "AcceleratorError"
    ):
        return AttemptFailure("gpu_device_lost", message, retryable=True)
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        return AttemptFailure("model_unavailable", message, retryable=False)
    return AttemptFailure("runner_error", f"{name}: {message}", retryable=True)
