"""Train the small class-conditional pixel diffusion model that revelio bundles (Fashion-MNIST).

A diffusers UNet2DModel with class embeddings plus one null class (labels are dropped to it 10%
of the time, for classifier-free guidance), epsilon prediction, AdamW with warm-up and cosine
decay, and EMA weights, which are what gets saved. Deterministic given --seed (data order, noise,
label dropout all come from seeded generators). Output: a diffusers pipeline folder (sampled with
DPM-Solver++, which gave clearly better samples than DDIM at this training budget) plus
revelio.json (class names, null class, default guidance), loadable with revelio.load_backbone.

  python train/train_default_model.py --out models/fashion-mnist --steps 20000
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, a Hub dataset id, or an image folder")
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64], help="block widths")
    parser.add_argument("--layers-per-block", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--label-dropout", type=float, default=0.1, help="share of labels replaced by the null class")
    parser.add_argument("--guidance-scale", type=float, default=2.5, help="default guidance stored with the model")
    parser.add_argument("--save-every", type=int, default=2000, help="steps between saves of the EMA pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from revelio.data.datasets import load_image_dataset
    from revelio.data.images import load_image, to_pixels

    torch.manual_seed(args.seed)
    data = load_image_dataset(args.dataset, "train", args.image_column, args.label_column)
    if data.class_names is None:
        raise SystemExit(f"{args.dataset} has no class labels; a class-conditional model needs them (--label-column)")
    channels = 1 if data.dataset[0][data.image_column].mode == "L" else 3
    images = to_pixels([load_image(x) for x in data.dataset[data.image_column]], args.resolution, channels)
    labels = torch.tensor(data.labels)
    null_class = len(data.class_names)
    depth = len(args.channels)
    unet = UNet2DModel(
        sample_size=args.resolution, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(args.channels), layers_per_block=args.layers_per_block,
        down_block_types=("DownBlock2D",) * depth, up_block_types=("UpBlock2D",) * depth,
        add_attention=False, norm_num_groups=min(16, args.channels[0]), num_class_embeds=null_class + 1,
    )
    noise_schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    ema = EMAModel(unet.parameters(), decay=args.ema_decay, use_ema_warmup=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / args.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    generator = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "training_log.jsonl", "w")
    order, cursor, started = torch.randperm(len(labels), generator=generator), 0, time.time()
    bar = tqdm(range(1, args.steps + 1), desc="train model", unit="step")
    for step in bar:
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(labels), generator=generator), 0
        batch = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        x0, y = images[batch], labels[batch].clone()
        y[torch.rand(len(y), generator=generator) < args.label_dropout] = null_class
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (len(y),), generator=generator)
        loss = F.mse_loss(unet(noise_schedule.add_noise(x0, noise, t), t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        schedule.step()
        ema.step(unet.parameters())
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": float(loss), "lr": schedule.get_last_lr()[0], "seconds": time.time() - started}) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{float(loss):.4f}")
        if step % args.save_every == 0 or step == args.steps:
            save(unet, ema, noise_schedule, data.class_names, null_class, args, step)
    log.close()


def save(unet, ema, noise_schedule, class_names: list[str], null_class: int, args: argparse.Namespace, step: int) -> None:
    """Write the EMA weights as a pipeline next to the live ones, then swap it into place.

    DDPMPipeline is only the container (revelio samples with its own class-conditional loop); its
    own ``__call__`` stays usable with the multistep DPM-Solver++ scheduler, unlike DDIMPipeline's.
    """
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

    ema_unet = type(unet).from_config(unet.config)
    ema.copy_to(ema_unet.parameters())
    # "leading" spacing starts sampling at t=951 for 25 steps: at t=999 the cosine schedule's
    # alpha_bar is ~0, and starting there cut the quality gate's accuracy from 0.80 to 0.32.
    scheduler = DPMSolverMultistepScheduler.from_config(noise_schedule.config, timestep_spacing="leading", steps_offset=1)
    staging = args.out / ".pipeline-staging"
    shutil.rmtree(staging, ignore_errors=True)
    DDPMPipeline(unet=ema_unet, scheduler=scheduler).save_pretrained(staging)
    extras = {"class_names": class_names, "null_class": null_class, "guidance_scale": args.guidance_scale,
              "trained_steps": step, "dataset": args.dataset, "seed": args.seed}
    (staging / "revelio.json").write_text(json.dumps(extras, indent=2) + "\n")
    final = args.out / "pipeline"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


if __name__ == "__main__":
    main()
