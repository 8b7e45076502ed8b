"""The generic SAGAN generator, built from the architecture table."""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from sagan.models.arch import BOTTOM_WIDTH, G_ARCH, add_extra_layers, checked_specs
from sagan.models.standing import ensure_standing
from sagan.nn.blocks import GBlock
from sagan.nn.spectral import DEFAULT_INIT, init_weights, sn_conv3x3, sn_linear
from sagan.schema import ModelConfig

if TYPE_CHECKING:
    from huggingface_hub import ModelCard


class Generator(nn.Module, PyTorchModelHubMixin, library_name="sagan-torch", tags=["gan", "sagan", "image-generation"],
                paper_url="https://arxiv.org/abs/1805.08318"):
    """z (and class y) -> image in [-1, 1].

    SN-linear z -> 4x4 x (ch * mult0), residual up-blocks with conditional BN (plain BN when
    ``num_classes == 0``), attention after the blocks whose output size is in ``attn``,
    then BN-ReLU-conv3x3-tanh.

    ``attn_bias`` gives the attention layers' 1x1 convs biases (the paper has none);
    ``attn_reduction`` sets their query/key width C/r; ``resblock`` places a
    ``ResidualBottleneck`` of the attention layer's size after the blocks of those output sizes
    (the attention study's control, see ``add_extra_layers``); ``init`` is the weight initialisation, one of ``sagan.nn.spectral.INIT_SCHEMES`` (see ``init_weights``).
    ``class_names`` (optional, one per class) travels with the model into exports.

    ``Generator.from_pretrained(NAME_OR_DIR)`` loads a shipped model (``"fmnist32"``), a folder
    written by ``sagan export`` / ``save_pretrained``, or (online) a Hugging Face Hub id.
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 64,
        z_dim: int = 128,
        num_classes: int = 1000,
        img_channels: int = 3,
        attn: list[int] | tuple[int, ...] = (64,),
        attn_variant: str = "paper",
        use_sn: bool = True,
        attn_bias: bool = False,
        init: str = DEFAULT_INIT,
        class_names: list[str] | None = None,
        attn_reduction: int = 8,
        resblock: list[int] | tuple[int, ...] = (),
    ):
        super().__init__()
        specs = checked_specs(G_ARCH, resolution, attn, "generator")
        checked_specs(G_ARCH, resolution, resblock, "generator", what="residual block")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else []
        self.resolution, self.ch, self.z_dim = resolution, ch, z_dim
        self.num_classes, self.img_channels = num_classes, img_channels
        self.first_channels = specs[0].in_mult * ch
        self.linear = sn_linear(z_dim, self.first_channels * BOTTOM_WIDTH ** 2, enabled=use_sn)
        self.blocks = nn.ModuleList(
            nn.ModuleList([GBlock(s.in_mult * ch, s.out_mult * ch, num_classes, s.resample, use_sn)]) for s in specs)
        out_ch = specs[-1].out_mult * ch
        # The output BN is unconditional in the lineage (BigGAN's output_layer).
        self.out_bn = nn.BatchNorm2d(out_ch)
        self.out_conv = sn_conv3x3(out_ch, img_channels, use_sn)
        init_weights(self, init)  # the backbone; then the attention / bottleneck layers, each on its own stream
        add_extra_layers(self.blocks, specs, [s.out_mult * ch for s in specs], attn, resblock, attn_variant, use_sn,
                         attn_bias, attn_reduction, init, "G")

    @classmethod
    def from_config(cls, m: ModelConfig, num_classes: int, img_channels: int,
                    class_names: list[str] | None = None) -> "Generator":
        """The generator a config's ``model`` section describes: its ``g_*`` keys and the shared ones
        (checked by ``sagan.models.arch.check_model_config``)."""
        return cls(m.resolution, m.g_ch, m.z_dim, num_classes, img_channels, list(m.g_attn), m.attn_variant, m.g_sn,
                   attn_bias=m.attn_bias, init=m.init, class_names=class_names, attn_reduction=m.attn_reduction,
                   resblock=list(m.g_resblock))

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``y``: class indices ``(B,)``, or class weights ``(B, num_classes)`` that mix the class
        embeddings (one-hot rows give exactly those classes; see ``ConditionalBatchNorm2d``)."""
        if self.conditional and y is None:
            raise ValueError("this generator is class-conditional: pass class labels y")
        h = self.linear(z).view(z.shape[0], self.first_channels, BOTTOM_WIDTH, BOTTOM_WIDTH)
        for stage in self.blocks:
            h = stage[0](h, y)
            for layer in stage[1:]:
                h = layer(h)
        h = torch.relu(self.out_bn(h))
        return torch.tanh(self.out_conv(h))

    def sample_latent(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, device=device, generator=generator)

    @classmethod
    def constructor_defaults(cls) -> dict[str, Any]:
        """The constructor's keyword defaults: what an exported ``config.json`` that leaves a key out builds."""
        return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "Generator":  # type: ignore[override]
        """A generator from a shipped name (``sagan.models.export.pretrained_names()``), an exported
        folder, or a Hugging Face Hub id; in eval mode. ``map_location`` picks the device."""
        from sagan.errors import CheckpointError
        from sagan.models.export import check_export, pretrained_names, resolve_export

        local = resolve_export(pretrained_model_name_or_path)
        if local is not None:
            check_export(local, cls.constructor_defaults())  # config.json sane and agreeing with the weights' header, before anything is built
            return super().from_pretrained(str(local), **kwargs)
        from sagan.models.hub import download_export, parse_hub_id

        name = str(pretrained_model_name_or_path)
        if parse_hub_id(name) is None:  # a path, not a Hub id ("owner/name")
            raise CheckpointError(f"{name} is not a folder and not a shipped model "
                                  f"({', '.join(pretrained_names()) or 'none'})")
        # A Hugging Face Hub id: the export's files into huggingface_hub's cache (one-line error within
        # seconds when the Hub cannot be reached and it is not cached), then loaded as a folder.
        hub = {k: kwargs.pop(k) for k in ("token", "cache_dir", "force_download", "local_files_only") if k in kwargs}
        revision = kwargs.pop("revision", None)
        for unused in ("proxies", "resume_download"):
            kwargs.pop(unused, None)
        folder = download_export(f"{name}@{revision}" if revision else name, **hub)
        return super().from_pretrained(str(folder), **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *, config: dict | None = None,
                        **kwargs) -> str | None:  # type: ignore[override]
        """``PyTorchModelHubMixin.save_pretrained`` (and so ``push_to_hub``) with the model card
        ``sagan export`` writes (``sagan.models.export.model_card``), not the mixin's generic one."""
        from sagan.models.export import model_card

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        card = folder / "README.md"
        if not card.exists():  # as the mixin: an existing card is kept
            card.write_text(model_card(dict(config if config is not None else self._hub_mixin_config)),
                            encoding="utf-8")
        return super().save_pretrained(folder, config=config, **kwargs)

    def generate_model_card(self, *args, **kwargs) -> "ModelCard":
        """The model card ``sagan export`` writes, from this model's config (and its provenance record)."""
        from huggingface_hub import ModelCard

        from sagan.models.export import model_card
        return ModelCard(model_card(dict(self._hub_mixin_config)))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         map_location: str = "cpu", strict: bool = True, config: dict | None = None,
                         proxies: dict | None = None, resume_download: bool | None = None,  # huggingface_hub < 1.0
                         **model_kwargs) -> "Generator":
        from sagan.models.export import (WEIGHTS_NAME, check_generator_args, check_weights_header, load_weights,
                                         read_config)

        if os.path.isdir(model_id):
            read_config(model_id)  # a newer export format is refused before anything is built
            file = os.path.join(model_id, WEIGHTS_NAME)
        else:
            from huggingface_hub import hf_hub_download
            file = hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                   force_download=force_download, token=token, local_files_only=local_files_only,
                                   **({"proxies": proxies} if proxies else {}))
        check_generator_args(model_kwargs, model_id)  # types, ranges and the weights' shapes, before building
        check_weights_header(model_kwargs, cls.constructor_defaults(), Path(file), model_id)
        model = cls(**model_kwargs)
        load_weights(model, file, map_location)
        model.to(map_location).eval()
        if isinstance(config, dict):
            model._hub_mixin_config = config  # the whole config.json, provenance record included
            info = config.get("sagan")
            if isinstance(info, dict) and info.get("ema", True):  # an EMA generator exported before 0.2:
                # BN statistics and spectral-norm vectors copied from the raw G are remade for its own weights
                mode = ((info.get("config") or {}).get("train") or {}).get("ema_bn", "standing")
                info["bn_statistics"] = ensure_standing(model, info.get("bn_statistics"), mode)
        return model
