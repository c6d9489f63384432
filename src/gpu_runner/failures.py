"""Why an attempt failed, whether another attempt may succeed, and when the process must stop."""

from __future__ import annotations


class AttemptFailure(Exception):
    """An attempt that ends in JobAttemptFailed; `reason` is a machine-readable code.

    `ends_process`: this process's device cannot run anything more (a sticky CUDA error): the
    attempt is reported, then the runner stops taking jobs and exits for its supervisor to
    restart it with a fresh CUDA context."""

    def __init__(
        self, reason: str, detail: str, *, retryable: bool, ends_process: bool = False
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:2000]
        self.retryable = retryable
        self.ends_process = ends_process


class JobCanceledError(Exception):
    """The job was canceled; raised at the end of the step during which the cancel arrived."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"canceled after step {step} of {total}")
        self.step = step
        self.total = total


class CannotStartError(RuntimeError):
    """The runner must not start (and says why on stderr, exiting 2)."""


class ModelDirectoryMissingError(CannotStartError):
    """A served workflow's model directory is absent."""


class ProfileError(CannotStartError):
    """A workflow's profile (steps, guidance, scheduler, LoRA) is inconsistent."""


class InsufficientMemoryError(CannotStartError):
    """The served workflows do not fit the device's free memory."""


class ModerationUnavailableError(CannotStartError):
    """Moderation is on (MODERATION_ENABLED) but its detector is not installed."""


OUT_OF_MEMORY = "gpu_out_of_memory"
MODERATION_REFUSED = "moderation_refused"
"""The result was refused by the moderation: a permanent failure the user is told about."""
DEVICE_LOST = "gpu_device_lost"

_STICKY_CUDA_ERRORS = (
    # CUDA's sticky errors (cudaErrorIllegalAddress, cudaErrorAssert, cudaErrorLaunchFailure,
    # cudaErrorMisalignedAddress, cudaErrorIllegalInstruction, cudaErrorHardwareStackError,
    # cudaErrorECCUncorrectable, cudaErrorLaunchTimeout) leave the context unusable: every later
    # call fails with the same error until the process exits.
    "an illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction",
    "hardware stack error",
    "uncorrectable ecc",
    "launch timed out",
    "device lost",
    # Reported through a library when the context broke under it; not worth telling apart.
    "cuda error",
    "cublas_status",
    "cudnn_status",
    "nccl",
)


def classify(error: BaseException) -> AttemptFailure:
    """Out of memory: retryable (the runner frees the cache and counts them); a CUDA error:
    retryable elsewhere and ends this process; anything else unexpected: retryable too, since
    jobs caps retries, while known-bad input is raised as a permanent AttemptFailure."""
    if isinstance(error, AttemptFailure):
        return error
    name = type(error).__name__
    message = str(error)
    if name == "OutOfMemoryError" or "out of memory" in message.lower():
        return AttemptFailure(OUT_OF_MEMORY, message, retryable=True)
    if name == "AcceleratorError" or any(m in message.lower() for m in _STICKY_CUDA_ERRORS):
        return AttemptFailure(DEVICE_LOST, message, retryable=True, ends_process=True)
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        return AttemptFailure("model_unavailable", message, retryable=False)
    return AttemptFailure("runner_error", f"{name}: {message}", retryable=True)


class DeviceHealth:
    """Whether this process's device can go on: not after a sticky error, nor after
    `max_consecutive_ooms` out-of-memory failures in a row (the cache is freed after each, so
    more mean the workflows do not fit beside whatever else holds the memory)."""

    def __init__(self, max_consecutive_ooms: int) -> None:
        self.lost: str | None = None
        self._max_ooms = max_consecutive_ooms
        self._ooms = 0

    def succeeded(self) -> None:
        self._ooms = 0

    def failed(self, failure: AttemptFailure) -> None:
        if failure.ends_process:
            self.lost = self.lost or f"{failure.reason}: {failure.detail}"
        elif failure.reason == OUT_OF_MEMORY:
            self._ooms += 1
            if self._ooms >= self._max_ooms:
                self.lost = self.lost or f"{self._ooms} out-of-memory failures in a row"
