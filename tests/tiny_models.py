"""Tiny randomly initialised diffusers pipelines for offline tests.

Every builder seeds torch, assembles a pipeline from configs alone (nothing is downloaded) and
writes it with ``save_pretrained``, so tests load it through
``diffusers.DiffusionPipeline.from_pretrained(path)`` exactly as users load Hub checkpoints.
The models are small enough that a forward pass at batch 2 takes at most a few tens of
milliseconds on CPU.
"""

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMPipeline,
    DDIMScheduler,
    DiffusionPipeline,
    DiTPipeline,
    DiTTransformer2DModel,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

# Latents are 8x8 everywhere; the 3-block VAE halves twice, so images are 32x32.
LATENT_SIZE = 8
IMAGE_SIZE = 32
TEXT_HIDDEN_SIZE = 32
MAX_PROMPT_TOKENS = 77  # same context length as real CLIP, so prompt handling matches SD
# Words that get a whole-word token, so tests can find e.g. "cat" as a single token.
WHOLE_WORDS = ("a", "photo", "of", "cat", "dog", "car", "red", "blue")


def _whole_word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """BPE merges that join each word left to right into one end-of-word token."""
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            if (merged, piece) not in merges:
                merges.append((merged, piece))
            merged += piece
    return merges


def _tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a byte-level alphabet, read from vocab/merges files.

    The byte alphabet is sorted so ids are stable. It loads through ``from_pretrained`` because
    in transformers 5 the constructor silently ignores ``vocab_file=``/``merges_file=``.
    """
    alphabet = sorted(ByteLevel.alphabet())
    merges = _whole_word_merges(WHOLE_WORDS)
    tokens = alphabet + [char + "</w>" for char in alphabet]
    tokens += ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vocab = {token: i for i, token in enumerate(tokens)}
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        lines = ["#version: 0.2"] + [" ".join(pair) for pair in merges]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_PROMPT_TOKENS)


def _text_config(tokenizer: CLIPTokenizer, **overrides: int) -> CLIPTextConfig:
    """CLIP text config whose vocabulary and special ids match the tokenizer."""
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextConfig(**{**settings, **overrides})


def _vae() -> AutoencoderKL:
    """A 3-block KL autoencoder: 3x32x32 images <-> 4x8x8 latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def _save(pipeline: DiffusionPipeline, path: str | Path) -> Path:
    """Write the pipeline where tests will load it from."""
    path = Path(path)
    pipeline.save_pretrained(path)
    return path


def build_pixel_unet(path: str | Path, class_names: list[str] | None = None) -> Path:
    """Save a 1-channel 16x16 pixel-space DDIM pipeline, class-conditional if names are given.

    The class-conditional UNet has one extra embedding (the last index) as the null class for
    classifier-free guidance; ``revelio.json`` records the names and that index.
    """
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        add_attention=False,
        norm_num_groups=8,
        num_class_embeds=None if class_names is None else len(class_names) + 1,
    )
    scheduler = DDIMScheduler(num_train_timesteps=1000, steps_offset=1)
    path = _save(DDIMPipeline(unet=unet, scheduler=scheduler), path)
    if class_names is not None:
        metadata = {"class_names": list(class_names), "null_class": len(class_names)}
        (path / "revelio.json").write_text(json.dumps(metadata, indent=2))
    return path


def stable_diffusion_pipeline(unet: UNet2DConditionModel | None = None) -> StableDiffusionPipeline:
    """A Stable Diffusion 1.x-shaped pipeline in memory: 32x32 images, 4x8x8 latents.

    Pass a bigger ``unet`` (e.g. SD1.5's architecture, for benchmarks); the text encoder's width
    follows its ``cross_attention_dim``.
    """
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    if unet is None:
        unet = UNet2DConditionModel(
            sample_size=LATENT_SIZE,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=TEXT_HIDDEN_SIZE,
            attention_head_dim=4,
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    text_config = _text_config(tokenizer, hidden_size=unet.config.cross_attention_dim)
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_stable_diffusion(path: str | Path) -> Path:
    """Save the tiny Stable Diffusion 1.x-shaped pipeline."""
    return _save(stable_diffusion_pipeline(), path)


def build_sdxl(path: str | Path) -> Path:
    """Save an SDXL-shaped pipeline: two text encoders, size/crop conditioning, 32x32 images."""
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        # The hidden states of both text encoders are concatenated along the feature axis.
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # Six size/crop numbers are embedded each, plus the pooled projection of encoder 2.
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_HIDDEN_SIZE,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipeline = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(
            _text_config(tokenizer, projection_dim=TEXT_HIDDEN_SIZE)
        ),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    return _save(pipeline, path)


def build_dit(path: str | Path, class_names: list[str]) -> Path:
    """Save a class-conditional DiT pipeline: 4x8x8 latents, 32x32 images, named classes.

    ``DiTPipeline`` takes ``id2label`` but does not put it in its config, so it would be lost by
    ``save_pretrained``. Registering it writes it to ``model_index.json``, and ``from_pretrained``
    hands it back, which fills ``pipe.labels`` (``DiTPipeline`` splits names at commas).
    The label embedding's null class is ``len(class_names)`` (real DiT: 1000, ImageNet's size).
    """
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,  # noise and learned variance, as in the real DiT
        num_layers=2,
        sample_size=LATENT_SIZE,
        patch_size=2,
        num_embeds_ada_norm=len(class_names),
        norm_type="ada_norm_zero",
    )
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    id2label = dict(enumerate(class_names))
    pipeline = DiTPipeline(
        transformer=transformer, vae=_vae(), scheduler=scheduler, id2label=id2label
    )
    pipeline.register_to_config(id2label=id2label)
    return _save(pipeline, path)


# --- Text-to-image transformers (FLUX, SD3, PixArt-Sigma): CLIP and T5 prompts --------------------------------

T5_MAX_TOKENS = 16  # revelio.json's max_sequence_length for these models; FLUX's 4x4 token grid is 16 tokens too


def _t5_tokenizer():  # a transformers.T5TokenizerFast (imported here: only these builders need it)
    """A T5 (SentencePiece unigram) tokenizer built in memory: whole words of WHOLE_WORDS, letters otherwise."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{w}" for w in WHOLE_WORDS] + ["\u2581"] + list("abcdefghijklmnopqrstuvwxyz")
    backend = Tokenizer(models.Unigram([(p, 0.0 if i < 3 else -1.0 - len(p)) for i, p in enumerate(pieces)], unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    return T5TokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def _t5_encoder(tokenizer, width: int):  # a transformers.T5EncoderModel with the tokenizer's vocabulary
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=2 * width, num_layers=2, num_heads=2,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0)
    return T5EncoderModel(config)


def _flow_vae() -> AutoencoderKL:
    """The tiny VAE with FLUX/SD3-style latent statistics: a shift and a scale."""
    vae = _vae()
    vae.register_to_config(scaling_factor=0.3611, shift_factor=0.1159)
    return vae


def _save_with_extras(pipeline: DiffusionPipeline, path: str | Path, extras: dict) -> Path:
    path = _save(pipeline, path)
    (path / "revelio.json").write_text(json.dumps(extras, indent=2))
    return path


def build_flux(path: str | Path, guidance_embeds: bool = False) -> Path:
    """Save a FLUX.1-schnell-shaped pipeline (dev-shaped with ``guidance_embeds``): 2 double- and 2
    single-stream blocks, CLIP (pooled) + T5 prompts, 32 px images -> 4x8x8 latents -> a 4x4 grid of
    packed tokens, the same count as the T5 prompt's tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    tokenizer, t5_tokenizer = _tokenizer(), _t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=TEXT_HIDDEN_SIZE, guidance_embeds=guidance_embeds, axes_dims_rope=[2, 2, 4],
    )
    scheduler = (FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True) if guidance_embeds
                 else FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False))
    pipeline = FluxPipeline(
        scheduler=scheduler, vae=_flow_vae(), text_encoder=CLIPTextModel(_text_config(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(t5_tokenizer, 32), tokenizer_2=t5_tokenizer, transformer=transformer,
    )
    return _save_with_extras(pipeline, path, {"resolution": IMAGE_SIZE, "max_sequence_length": T5_MAX_TOKENS})


def build_sd3(path: str | Path) -> Path:
    """Save a Stable Diffusion 3-shaped pipeline: 2 joint blocks, two CLIPs and T5, shift 3, 32 px images
    (4x8x8 latents, 2x2 patches: a 4x4 token grid)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    tokenizer, t5_tokenizer = _tokenizer(), _t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=LATENT_SIZE, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=2 * TEXT_HIDDEN_SIZE, caption_projection_dim=16,
        pooled_projection_dim=2 * TEXT_HIDDEN_SIZE, pos_embed_max_size=LATENT_SIZE,
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_flow_vae(),
        text_encoder=CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=TEXT_HIDDEN_SIZE)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=TEXT_HIDDEN_SIZE)), tokenizer_2=tokenizer,
        text_encoder_3=_t5_encoder(t5_tokenizer, 2 * TEXT_HIDDEN_SIZE), tokenizer_3=t5_tokenizer,
    )
    return _save_with_extras(pipeline, path, {"max_sequence_length": T5_MAX_TOKENS})


def build_pixart_sigma(path: str | Path) -> Path:
    """Save a PixArt-Sigma-shaped pipeline: 2 blocks with T5 cross-attention, noise + variance outputs,
    DPM-Solver, 32 px images (4x8x8 latents, 2x2 patches)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    t5_tokenizer = _t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, cross_attention_dim=16,
        sample_size=LATENT_SIZE, patch_size=2, caption_channels=32, norm_num_groups=8,
    )
    pipeline = PixArtSigmaPipeline(
        tokenizer=t5_tokenizer, text_encoder=_t5_encoder(t5_tokenizer, 32), vae=_vae(), transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    )
    return _save_with_extras(pipeline, path, {"max_sequence_length": T5_MAX_TOKENS})
