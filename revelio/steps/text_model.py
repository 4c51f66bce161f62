"""A small latent text-to-image model trained from scratch: the Stable Diffusion path with weights
that mean something (colour Fashion-MNIST, "a red sneaker").

Two stages, one step counter. Steps 1..``vae_steps`` train an ``AutoencoderKL`` (32 px RGB to an
8x8x4 latent; MSE plus a small KL term). Then every training image is encoded once to the mode of
its latent distribution (revelio's own encode_latents reads the mode too, so the model is trained
on exactly the latents revelio extracts from; the KL weight keeps the posterior narrow, so a sample
would add little but noise to the targets), the scaling factor is measured as 1 / their standard
deviation, and the remaining ``steps`` train a ``UNet2DConditionModel`` with cross-attention and a
``CLIPTextModel`` jointly (epsilon prediction on SD's scaled-linear schedule; captions dropped to ""
``caption_dropout`` of the time, for classifier-free guidance), with EMA weights of both. The
tokenizer holds every caption word whole (revelio.models.word_tokenizer).

Deterministic given the seed and resumable as the default model's trainer: every ``save_every``
steps the whole state is checkpointed (storage.files.write_state) and rerunning the same command
after a kill -9 continues to the same weights. The output is an ordinary StableDiffusionPipeline
folder (EMA weights, DPM-Solver++, no safety checker) plus revelio.json (prompt template, label
sets, default guidance and steps, this config).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from revelio.config import option, to_json
from revelio.data.colour_fashion import PROMPT_TEMPLATE
from revelio.data.datasets import COLOUR_FASHION_MNIST, load_image_dataset
from revelio.data.images import to_pixels
from revelio.errors import DatasetError
from revelio.layout import CHECKPOINT_FILE, PIPELINE_DIR, TRAINING_LOG_FILE, TRAINING_RUN_FILE
from revelio.models.loading import EXTRAS_FILE
from revelio.models.word_tokenizer import word_tokenizer
from revelio.steps.runs import check_same_command
from revelio.storage.files import read_state, write_json, write_state

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class TextModelConfig:
    """The three models' shapes, the two stages' schedules and the data; stored in the pipeline's revelio.json."""

    out: Path = option(help="gets pipeline/ (the EMA model), checkpoint.safetensors and training_log.jsonl")
    dataset: str = option("colour-fashion-mnist", "a captioned image dataset: colour-fashion-mnist, a Hub id or an image folder")
    image_column: str | None = option(None)
    caption_column: str = option("caption")
    limit: int | None = option(None, "train on a class-balanced subset of this many images")
    resolution: int = option(32)
    vae_channels: list[int] = option([16, 32, 32], "VAE block widths (three blocks: 4x down to the latent)")
    vae_steps: int = option(2500)
    vae_batch_size: int = option(32)
    vae_lr: float = option(1e-3)
    kl_weight: float = option(1e-6)
    text_width: int = option(64, "text encoder width (also the UNet's cross-attention width)")
    text_layers: int = option(2)
    max_tokens: int = option(16, "prompt length in tokens, start and end included")
    channels: list[int] = option([32, 64, 64], "UNet block widths; every block has cross-attention")
    layers_per_block: int = option(1)
    attention_heads: int = option(4)
    steps: int = option(8000, "UNet and text encoder steps, after the VAE's")
    batch_size: int = option(64)
    lr: float = option(1e-3)
    warmup_steps: int = option(200)
    ema_decay: float = option(0.999)
    caption_dropout: float = option(0.1, "share of captions replaced by the empty prompt")
    guidance_scale: float = option(4.0, "default guidance stored with the model")
    inference_steps: int = option(25, "default sampler steps stored with the model")
    save_every: int = option(500, "steps between saves of the pipeline (UNet stage) and the training checkpoint")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)")
    overwrite: bool = option(False, "start over instead of resuming the run in --out")
    seed: int = option(0)


def build_models(config: TextModelConfig, tokenizer: CLIPTokenizer) -> tuple[AutoencoderKL, CLIPTextModel, UNet2DConditionModel]:
    """The three untrained models; the VAE's latent is 4 channels at resolution / 4."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    depth = len(config.vae_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * depth,
                        up_block_types=("UpDecoderBlock2D",) * depth, block_out_channels=tuple(config.vae_channels),
                        layers_per_block=1, latent_channels=4, norm_num_groups=min(32, config.vae_channels[0]),
                        sample_size=config.resolution)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=4 * config.text_width,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_width // 16,  # 16 dims a head
        max_position_embeddings=config.max_tokens, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    levels = len(config.channels)
    unet = UNet2DConditionModel(
        sample_size=config.resolution // 2 ** (depth - 1), in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * levels, up_block_types=("CrossAttnUpBlock2D",) * levels,
        block_out_channels=tuple(config.channels), layers_per_block=config.layers_per_block,
        cross_attention_dim=config.text_width, attention_head_dim=config.attention_heads,
        norm_num_groups=min(32, config.channels[0]),
    )
    return vae, text, unet


def train_text_model(config: TextModelConfig) -> Path:
    """Train (or resume) the VAE, then the UNet with the text encoder; returns the pipeline folder."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    data = load_image_dataset(config.dataset, "train", config.image_column, limit=config.limit, seed=config.seed)
    if config.caption_column not in data.dataset.column_names:
        raise DatasetError(f"{config.dataset} has no caption column {config.caption_column!r}; its columns: {data.dataset.column_names}")
    images = to_pixels(data.dataset[data.image_column], config.resolution, 3)
    captions = list(data.dataset[config.caption_column])
    prompts = sorted(set(captions)) + [""]  # the last one is the dropped caption
    caption_index = torch.tensor([prompts.index(c) for c in captions])
    tokenizer = word_tokenizer(prompts, config.max_tokens)
    tokens = tokenizer(prompts, padding="max_length", max_length=config.max_tokens, truncation=True, return_tensors="pt").input_ids
    vae, text, unet = build_models(config, tokenizer)
    denoisers = list(unet.parameters()) + list(text.parameters())
    noise_schedule = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ema = EMAModel(denoisers, decay=config.ema_decay, use_ema_warmup=True)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    opt = torch.optim.AdamW(denoisers, lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps)))
    )
    generator = torch.Generator().manual_seed(config.seed)
    config.out.mkdir(parents=True, exist_ok=True)
    if config.overwrite:
        for name in (CHECKPOINT_FILE, TRAINING_RUN_FILE, TRAINING_LOG_FILE):
            (config.out / name).unlink(missing_ok=True)
    check_same_command(config, config.out / TRAINING_RUN_FILE, "a training run", ignore=("overwrite", "threads"))
    order, cursor, first = torch.randperm(len(images), generator=generator), 0, 1
    if (config.out / CHECKPOINT_FILE).is_file():
        state = read_state(config.out / CHECKPOINT_FILE)
        for module, key in ((vae, "vae"), (text, "text_encoder"), (unet, "unet"), (vae_opt, "vae_optimizer"),
                            (opt, "optimizer"), (schedule, "schedule"), (ema, "ema")):
            module.load_state_dict(state[key])
        generator.set_state(state["generator"])
        order, cursor, first = state["order"], int(state["cursor"]), int(state["step"]) + 1
    latents = None
    if first > config.vae_steps:
        latents = encode_training_latents(vae, images)
    total = config.vae_steps + config.steps
    started = time.time()
    with open(config.out / TRAINING_LOG_FILE, "a+") as log_file:
        log_file.seek(0)  # lines past the checkpoint (steps to be redone) are dropped
        kept = [line for line in log_file if line.strip() and json.loads(line)["step"] < first]
        log_file.seek(0)
        log_file.truncate()
        log_file.writelines(kept)
        bar = tqdm(range(first, total + 1), desc="train text model", unit="step", initial=first - 1, total=total)
        for step in bar:
            in_vae_stage = step <= config.vae_steps
            batch_size = config.vae_batch_size if in_vae_stage else config.batch_size
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(images), generator=generator), 0
            batch = order[cursor : cursor + batch_size]
            cursor += batch_size
            if in_vae_stage:
                posterior = vae.encode(images[batch]).latent_dist
                reconstruction = vae.decode(posterior.sample(generator)).sample
                loss = F.mse_loss(reconstruction, images[batch])
                loss = loss + config.kl_weight * posterior.kl().mean()
                optimiser, parameters = vae_opt, list(vae.parameters())
            else:
                x0, prompt = latents[batch], caption_index[batch].clone()
                prompt[torch.rand(len(prompt), generator=generator) < config.caption_dropout] = len(prompts) - 1
                noise = torch.randn(x0.shape, generator=generator)
                t = torch.randint(0, 1000, (len(x0),), generator=generator)
                condition = text(tokens[prompt])[0]
                loss = F.mse_loss(unet(noise_schedule.add_noise(x0, noise, t), t, encoder_hidden_states=condition).sample, noise)
                optimiser, parameters = opt, denoisers
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            if not in_vae_stage:
                schedule.step()
                ema.step(denoisers)
            if step % 50 == 0:
                log_file.write(json.dumps({"step": step, "stage": "vae" if in_vae_stage else "unet", "loss": float(loss),
                                           "seconds": time.time() - started}) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{float(loss):.4f}")
            if step == config.vae_steps:
                latents = encode_training_latents(vae, images)
            if step % config.save_every == 0 or step == total or step == config.vae_steps:
                if not in_vae_stage:
                    save(vae, text, unet, ema, tokenizer, data.dataset, config, step - config.vae_steps)
                write_state({
                    "vae": vae.state_dict(), "text_encoder": text.state_dict(), "unet": unet.state_dict(),
                    "vae_optimizer": vae_opt.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                    "ema": ema.state_dict(), "generator": generator.get_state(), "order": order, "cursor": cursor, "step": step,
                }, config.out / CHECKPOINT_FILE)  # atomic: a kill during the write keeps the previous one
    return config.out / PIPELINE_DIR


def encode_training_latents(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Every image's latent mode, scaled to unit standard deviation; the factor goes into the VAE's config."""
    import torch

    with torch.no_grad():
        modes = torch.cat([vae.encode(part).latent_dist.mode() for part in images.split(batch_size)])
    scaling_factor = float(1 / modes.double().std())
    vae.register_to_config(scaling_factor=scaling_factor)
    log.info("VAE latents: scaling factor %.5f", scaling_factor)
    return modes * scaling_factor


def label_sets(dataset: Any) -> dict[str, list[str]]:
    """The dataset's ClassLabel columns and their names (for colour Fashion-MNIST: class and colour)."""
    import datasets

    return {name: list(feature.names) for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)}


def save(
    vae: AutoencoderKL, text: CLIPTextModel, unet: UNet2DConditionModel, ema: EMAModel, tokenizer: CLIPTokenizer,
    dataset: Any, config: TextModelConfig, step: int,
) -> None:
    """Write the EMA weights as a StableDiffusionPipeline next to the live one, then swap it into place."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    ema_text, ema_unet = type(text)(text.config), type(unet).from_config(unet.config)
    ema.copy_to(list(ema_unet.parameters()) + list(ema_text.parameters()))
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                            beta_schedule="scaled_linear", steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=ema_text, tokenizer=tokenizer, unet=ema_unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    staging = config.out / ".pipeline-staging"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    extras = {"prompt_template": PROMPT_TEMPLATE if config.dataset == COLOUR_FASHION_MNIST else None,
              "label_sets": label_sets(dataset), "guidance_scale": config.guidance_scale,
              "num_inference_steps": config.inference_steps, "trained_steps": step,
              "vae_scaling_factor": vae.config.scaling_factor, "dataset": config.dataset, "seed": config.seed,
              "config": to_json(config)}
    write_json(extras, staging / EXTRAS_FILE)
    final = config.out / PIPELINE_DIR
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
