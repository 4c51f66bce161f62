"""The SAE trainer's step: forward, hand-written backward into persistent buffers, Adam, renorm.

Written out instead of autograd because on CPU page-faulting fresh [d_sae, d_in] gradients every
step costs as much as the sparse math itself. Gradients match autograd's exactly (tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from revelio.sae.kernels import SparseCodePattern
from revelio.sae.model import KSparseAutoencoder, pre_activations


class FusedStep:
    """One training step with the backward pass written out, into persistent gradient buffers.

    Autograd would allocate fresh [d_sae, d_in] gradients every step, and on CPU page-faulting
    those in costs as much as the sparse math itself; here every big buffer lives as long as the
    trainer. Loss: normalized MSE, plus ``auxk_coef`` x AuxK (the top ``k_aux`` dead latents
    reconstructing the residual) when latents are dead. Gradients match autograd's (tests).
    """

    def __init__(self, sae: KSparseAutoencoder, opt: torch.optim.Optimizer, batch_size: int) -> None:
        self.sae, self.opt = sae, opt
        device = sae.W_enc.device
        self.pre = torch.empty(batch_size, sae.d_sae, device=device, dtype=sae.W_enc.dtype)
        self.radial = torch.empty(sae.d_sae, device=device, dtype=sae.W_enc.dtype)
        for p in sae.parameters():
            p.grad = torch.zeros_like(p)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, dead: torch.Tensor | None, k_aux: int, auxk_coef: float) -> dict[str, torch.Tensor]:
        sae = self.sae
        target = x * sae.input_scale
        centred = target - sae.b_pre
        pre = pre_activations(centred, sae.W_enc, sae.b_enc, out=self.pre[: x.shape[0]])
        raw, indices = pre.topk(sae.k, dim=-1, sorted=False)
        # embedding_bag's per-sample-weight gradient is the codes' gradient: k dot products per
        # row, computed without gathering [N, k, d_in] decoder rows (2x faster than gather + bmm).
        with torch.enable_grad():
            values = raw.relu().requires_grad_()
            recon = F.embedding_bag(indices, sae.W_dec.detach(), per_sample_weights=values, mode="sum")
        err = recon.detach() + sae.b_pre - target
        total_var = (target - target.mean(dim=0)).pow(2).sum()
        nmse = err.pow(2).sum() / total_var
        d_recon = err * (2 / total_var)
        (d_values,) = torch.autograd.grad(recon, values, d_recon)
        values = values.detach()
        d_values *= raw > 0
        pattern = SparseCodePattern(indices, sae.d_sae)
        pattern.accumulate_(sae.W_dec.grad, values, d_recon, overwrite=True)
        pattern.accumulate_(sae.W_enc.grad, d_values, centred, overwrite=True)
        sae.b_enc.grad.zero_().index_add_(0, indices.reshape(-1), d_values.reshape(-1))
        # Row r's decoder gradient dotted with row r itself, from [N, k] numbers instead of a pass
        # over [d_sae, d_in]: sum of values * (W_dec[r] . d_recon) = sum of values * d_values.
        self.radial.zero_().index_add_(0, indices.reshape(-1), (values * d_values).reshape(-1))
        # d loss / d b_pre through the encoder input is -sum_n W_enc^T d_pre[n] = -(b_enc's grad) @ W_enc.
        torch.addmv(d_recon.sum(dim=0), sae.W_enc.t(), sae.b_enc.grad, alpha=-1, out=sae.b_pre.grad)
        aux = torch.zeros((), device=x.device)
        if dead is not None and k_aux > 0:
            aux = self._auxk(pre, centred, err, dead, k_aux, auxk_coef, total_var)
        sae.W_dec.grad.addcmul_(sae.W_dec, self.radial.unsqueeze(1), value=-1)  # keep rows unit-norm
        self.opt.step()
        sae.normalize_decoder()
        return {"normalized_mse": nmse, "auxk_loss": aux, "indices": indices, "active": values > 0}

    def _auxk(
        self, pre: torch.Tensor, centred: torch.Tensor, err: torch.Tensor, dead: torch.Tensor, k_aux: int,
        coef: float, total_var: torch.Tensor,
    ) -> torch.Tensor:
        """AuxK: the top ``k_aux`` dead latents of each row reconstruct the residual; adds grads.

        Dead latents are few once training settles, so this works densely on the dead columns
        only ([N, n_dead] matmuls), far cheaper than k_aux more sparse rows per input.
        """
        sae = self.sae
        dead_ids = dead.nonzero().squeeze(1)
        raw = pre.index_select(1, dead_ids)
        codes = raw.relu()
        if k_aux < len(dead_ids):
            keep = torch.zeros_like(codes, dtype=torch.bool).scatter_(1, raw.topk(k_aux, dim=-1, sorted=False).indices, True)
            codes *= keep
        decoder = sae.W_dec.index_select(0, dead_ids)
        aux_err = codes @ decoder + err  # err = recon - target, so the residual to explain is -err
        d_aux = aux_err * (2 * coef / total_var)
        d_codes = (d_aux @ decoder.t()) * (codes > 0)
        sae.W_dec.grad.index_add_(0, dead_ids, codes.t() @ d_aux)
        self.radial.index_add_(0, dead_ids, (codes * d_codes).sum(dim=0))
        sae.W_enc.grad.index_add_(0, dead_ids, d_codes.t() @ centred)
        sae.b_enc.grad.index_add_(0, dead_ids, d_codes.sum(dim=0))
        sae.b_pre.grad -= d_codes.sum(dim=0) @ sae.W_enc.index_select(0, dead_ids)
        return aux_err.pow(2).sum() / total_var
