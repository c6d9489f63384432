"""The `nudenet` wheel's ONNX detector (shipped inside the wheel: nothing downloads at run time).

An optional extra (`imagebot[moderation]`): the wheel's metadata says MIT but the licence files
it ships are the AGPL-3.0 (docs/architecture.md, Moderation). Imported only when it is used.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

NEEDS = ("nudenet", "onnxruntime", "cv2", "numpy")


class NudeNetDetector:
    """NudeNet's 320n model on the CPU with `threads` threads; labels such as FACE_FEMALE,
    FEET_EXPOSED, BELLY_COVERED, FEMALE_BREAST_EXPOSED (nudenet's 18 classes).

    Built at once (ImportError when the extra is missing: the service must not start), loaded
    on a thread of its own meanwhile (~0.5 s of imports and model), so a service's start does
    not wait for it; a check before it is loaded waits, and a load that fails fails the check."""

    name = "nudenet"

    def __init__(self, threads: int = 1, *, preload: bool = True) -> None:
        missing = [module for module in NEEDS if importlib.util.find_spec(module) is None]
        if missing:
            raise ImportError(f"no module named {', '.join(missing)}")
        self._threads = threads
        self._lock = threading.Lock()
        self._model: tuple[Any, Any] | None = None
        if preload:
            threading.Thread(target=self._preload, name="nudenet-load", daemon=True).start()

    def detect(self, image: Image.Image) -> Mapping[str, float]:
        model, numpy = self._loaded()
        # nudenet reads images as OpenCV does: BGR
        pixels = numpy.ascontiguousarray(numpy.asarray(image.convert("RGB"))[:, :, ::-1])
        scores: dict[str, float] = {}
        for found in model.detect(pixels):
            scores[found["class"]] = max(scores.get(found["class"], 0.0), float(found["score"]))
        return scores

    def _preload(self) -> None:
        try:
            self._loaded()
        except Exception:  # told again, and raised, by the first check
            log.exception("the nudenet detector did not load")

    def _loaded(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> tuple[Any, Any]:
        import nudenet
        import numpy
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(Path(nudenet.__file__).parent / "320n.onnx"),
            options,
            providers=["CPUExecutionProvider"],
        )
        # nudenet's own constructor opens the model with onnxruntime's defaults (a thread per
        # core): the same detector, with the one session bounded to `threads`
        model = nudenet.NudeDetector.__new__(nudenet.NudeDetector)
        model.onnx_session = session
        model.input_width = model.input_height = 320
        model.input_name = session.get_inputs()[0].name
        return model, numpy
