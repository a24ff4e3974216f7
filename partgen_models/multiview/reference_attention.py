"""Zero123++'s reference attention as a diffusers attention processor.

Zero123++ conditions on the input image by running the UNet once on the noised reference latent and
letting every self-attention (``attn1``) of the main pass attend to the hidden states that layer saw
in the reference pass (SUDO-AI-3D/zero123plus ``diffusers-support/pipeline.py``,
``ReferenceOnlyAttnProc``). Both passes share one :class:`ReferenceBank`; the sampler sets its mode.
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class ReferenceBank:
    """Holds each ``attn1``'s reference-pass input until the main pass reads it.

    mode "write": store the layer input; "read": append the stored tokens to keys/values and drop
    them; "off": plain self-attention. ``keep_tokens`` (training) keeps them after reading, because
    gradient checkpointing recomputes the main pass's attention during the backward pass.
    """

    def __init__(self) -> None:
        self.mode = "off"
        self.keep_tokens = False
        self.tokens: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self.mode = "off"
        self.tokens.clear()


class ReferenceAttnProcessor:
    """Self-attention whose keys/values also cover the reference pass's tokens."""

    def __init__(self, name: str, bank: ReferenceBank) -> None:
        self.name = name
        self.bank = bank
        self.inner = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        temb: Optional[torch.Tensor] = None,
        **unused,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if self.bank.mode == "write":
            self.bank.tokens[self.name] = context
        elif self.bank.mode == "read":
            tokens = self.bank.tokens
            reference = tokens[self.name] if self.bank.keep_tokens else tokens.pop(self.name)  # (B_ref, N_ref, C)
            if reference.shape[0] != context.shape[0]:  # several samples per conditioning image share it
                reference = reference.repeat_interleave(context.shape[0] // reference.shape[0], dim=0)
            context = torch.cat([context, reference.to(context.dtype)], dim=1)  # (B, N + N_ref, C)
        return self.inner(attn, hidden_states, context, attention_mask, temb)


def install_reference_attention(unet: torch.nn.Module) -> ReferenceBank:
    """Route every ``attn1`` of ``unet`` through one shared bank; other attention stays standard."""
    bank = ReferenceBank()
    processors = {
        name: ReferenceAttnProcessor(name, bank) if name.endswith("attn1.processor") else AttnProcessor2_0()
        for name in unet.attn_processors
    }
    unet.set_attn_processor(processors)
    return bank
