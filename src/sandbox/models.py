"""Tiny random Qwen-Image pipelines, built offline and saved like the real model directories.

No weights can be downloaded here, so tests build the two diffusers pipelines the runner serves
from random tiny components, `save_pretrained` them, and let the runner load them through its
production `from_pretrained(models_dir / ...)` path.

transformers 5's `Qwen2VLProcessor` insists on a video processor, which needs torchvision, and
PyPI's torchvision does not import next to the CPU torch wheel. The edit pipeline therefore gets
`ImageOnlyQwen2VLProcessor` (same image handling, no video). `save_pretrained` records it under
this module's path; diffusers resolves such a component from `sys.modules`, so importing this
module before loading is all it takes. Production machines have torchvision and the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SHRUNK_VAE_IMAGE_SIZE = 64 * 64
SHRUNK_CONDITION_IMAGE_SIZE = 56 * 56


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without the video half (which needs torchvision)."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_token = "<|image_pad|>"
        self.video_token = "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def shrink_edit_image_sizes() -> None:
    """The Plus pipeline resizes inputs to ~1024² and ~384²: far too slow for a tiny model."""
    pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE = SHRUNK_VAE_IMAGE_SIZE
    pipeline_qwenimage_edit_plus.CONDITION_IMAGE_SIZE = SHRUNK_CONDITION_IMAGE_SIZE


def byte_level_tokenizer(directory: Path) -> Qwen2Tokenizer:
    """A Qwen2 tokenizer over single bytes, with Qwen's special tokens (no hub needed)."""
    # GPT-2's byte-to-unicode table: every byte becomes one printable character.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    vocab = {chr(code): index for index, code in enumerate(codes)}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = Qwen2Tokenizer.from_pretrained(directory)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


def _text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2]},
            "rope_theta": 1_000_000.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vocab_size=len(tokenizer),
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _components(directory: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    tokenizer = byte_level_tokenizer(directory / "_tokenizer_source")
    return {
        "transformer": QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=3,
            joint_attention_dim=16,
            axes_dims_rope=(8, 4, 4),
        ),
        "vae": AutoencoderKLQwenImage(
            base_dim=24,
            z_dim=4,
            dim_mult=[1, 2, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        ),
        "text_encoder": _text_encoder(tokenizer),
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def build_tiny_edit_pipeline(directory: Path) -> Path:
    """A random tiny `QwenImageEditPlusPipeline`, saved to `directory`."""
    components = _components(directory)
    processor = ImageOnlyQwen2VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56
        ),
        tokenizer=components["tokenizer"],
    )
    QwenImageEditPlusPipeline(processor=processor, **components).save_pretrained(directory)
    return directory


def build_tiny_text_to_image_pipeline(directory: Path) -> Path:
    """A random tiny `QwenImagePipeline`, saved to `directory`."""
    QwenImagePipeline(**_components(directory)).save_pretrained(directory)
    return directory


def build_tiny_lora(file: Path, *, rank: int = 4) -> Path:
    """A random LoRA for the tiny transformer (its attention projections), saved as one
    safetensors file the way lightx2v ships Lightning: the profile path loads it through peft.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(1)
    transformer = _components(file.parent / "_lora_base")["transformer"]
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a LoRA that changes nothing
                parameter.normal_(std=0.5)
    QwenImageEditPlusPipeline.save_lora_weights(
        file.parent,
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        weight_name=file.name,
    )
    return file


if __name__ == "__main__":
    import sys

    builders = {
        "edit": build_tiny_edit_pipeline,
        "text-to-image": build_tiny_text_to_image_pipeline,
    }
    if len(sys.argv) != 3 or sys.argv[1] not in builders:
        sys.exit(f"usage: python -m sandbox.models {'|'.join(builders)} DIRECTORY")
    print(builders[sys.argv[1]](Path(sys.argv[2])))
