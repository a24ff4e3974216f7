"""A tiny Qwen3-VL folder in the released layout: transformers' real classes with shrunk widths.

The released Qwen/Qwen3-VL-4B-Instruct folder holds config.json, generation_config.json, sharded
safetensors with model.safetensors.index.json, a byte-level BPE tokenizer with Qwen's chat special
tokens, the image/video processor configs and a chat template. The tiny one is written by the same
classes' ``save_pretrained`` (sharded like the release), with a tokenizer built offline from the 256
byte symbols plus those special tokens, and a chat template that renders system/user/assistant turns
and image placeholders exactly as Qwen's does for the conversations the planner sends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_models import _bytes_to_unicode, randomize_

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")

# Qwen's ChatML turns with image placeholders, for text and image content items (no tools, no video).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n"
    "{% if message.content is string %}{{ message.content }}{% else %}{% for item in message.content %}"
    "{% if item.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item.type == 'text' %}{{ item.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_QWEN3_VL_TEXT: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, max_position_embeddings=4096,
    # Qwen3-VL's interleaved multimodal RoPE; the sections sum to head_dim / 2.
    rope_parameters=dict(rope_type="default", rope_theta=5_000_000.0, mrope_section=[2, 1, 1], mrope_interleaved=True),
)
TINY_QWEN3_VL_VISION: dict[str, Any] = dict(
    depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
    spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0],
)
_TINY_PIXELS = (32 * 32, 64 * 64)  # processor bounds: at most 16 patches, 4 image tokens


def _write_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(_bytes_to_unicode())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    return Qwen2TokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None)


def write_tiny_qwen3_vl(folder: Path, seed: int = 90) -> Path:
    """A Qwen/Qwen3-VL-*-Instruct folder with tiny widths, sharded with an index like the 4B release."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    folder = Path(folder)
    tokenizer = _write_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(TINY_QWEN3_VL_TEXT, vocab_size=len(tokenizer)), vision_config=TINY_QWEN3_VL_VISION,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True,
    )
    model = randomize_(Qwen3VLForConditionalGeneration(config), torch.Generator().manual_seed(seed))
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(str(folder), max_shard_size="300KB")
    image_processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=_TINY_PIXELS[0],
                                            max_pixels=_TINY_PIXELS[1], image_mean=[0.5] * 3, image_std=[0.5] * 3)
    video_processor = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                     chat_template=QWEN_CHAT_TEMPLATE).save_pretrained(str(folder))
    return folder
