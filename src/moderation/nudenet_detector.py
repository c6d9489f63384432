"""The `nudenet` wheel's ONNX detector (shipped inside the wheel: nothing downloads at run time).

An optional extra (`imagebot[moderation]`): the wheel's metadata says MIT but the licence file
it ships is the AGPL-3.0 (docs/architecture.md, Moderation). Imported only when it is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


class NudeNetDetector:
    """NudeNet's 320n model on the CPU with `threads` threads; labels such as FACE_FEMALE,
    FEET_EXPOSED, BELLY_COVERED, FEMALE_BREAST_EXPOSED (nudenet's 18 classes)."""

    name = "nudenet"

    def __init__(self, threads: int = 1) -> None:
        import nudenet
        import numpy
        import onnxruntime

        self._numpy: Any = numpy
        self._detector: Any = nudenet.NudeDetector()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = Path(nudenet.__file__).parent / "320n.onnx"
        # nudenet builds its session with onnxruntime's defaults (a thread per core): the
        # same model, bounded so a check never takes every core from the service beside it.
        self._detector.onnx_session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )

    def detect(self, image: Image.Image) -> Mapping[str, float]:
        # nudenet reads images as OpenCV does: BGR
        pixels = self._numpy.ascontiguousarray(
            self._numpy.asarray(image.convert("RGB"))[:, :, ::-1]
        )
        scores: dict[str, float] = {}
        for found in self._detector.detect(pixels):
            scores[found["class"]] = max(scores.get(found["class"], 0.0), float(found["score"]))
        return scores
