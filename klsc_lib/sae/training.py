"""Training and evaluation of the CNN transcoder (paper App C.1 eq. 42, App J.1:
Adam at lr 1e-4, TopK only, no auxiliary loss, trained until an explained-variance
target is met; the authors' release names the checkpoint ``..._auxFalse_...``).

:func:`train_transcoder` is a plain loop: Adam with linear warm-up and a final
linear decay, decoder rows renormalised to unit norm after every step, float64
FVU / L0 / dead-feature fraction logged, atomic resumable checkpoints, ``tqdm``
progress. It runs on CPU or GPU (bf16 autocast on CUDA) and, when
``torch.distributed`` is initialised (``torchrun --nproc_per_node N``), as DDP:
every rank gets its slice of the global batch and gradients are averaged.

An option the paper does not use: the AuxK loss of Gao et al. (2024, "Scaling and
evaluating sparse autoencoders", App A.2), which asks the ``aux_k`` largest
pre-activations among *dead* latents to reconstruct the residual error, so that dead
latents receive a gradient again (``TrainConfig.aux_k > 0``; default 0 = off).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from klsc_lib.interfaces import HookedBackbone
from klsc_lib.runtime import atomic_path
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig, hook_target, spliced, topk_per_position

Batch = tuple[torch.Tensor, torch.Tensor]  # (block input_BCHW, block output_BCHW)
BatchSource = Callable[[int], Iterator[Batch]]  # start_step -> this rank's batches from that step on


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float = 1e-4  # App J.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    decay_frac: float = 0.2  # linear decay to 0 over the last fraction of steps
    dead_window: int = 50  # a feature that fired in none of the last `dead_window` steps is dead
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)
    amp: bool = True  # bf16 autocast, CUDA only
    aux_k: int = 0  # AuxK (Gao et al. 2024): dead latents used per position; 0 = off (paper App J.1)
    aux_coef: float = 1 / 32  # weight of the AuxK loss (Gao et al. 2024)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step``: linear warm-up, constant, linear decay."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    decay_start = int(cfg.steps * (1 - cfg.decay_frac))
    if step >= decay_start and cfg.decay_frac > 0:
        return max(0.0, (cfg.steps - step) / (cfg.steps - decay_start))
    return 1.0


def fvu(y_BCHW: torch.Tensor, y_hat_BCHW: torch.Tensor) -> float:
    """Fraction of variance unexplained, in float64: sum of squared errors over the
    total variance around the per-channel mean over batch and positions
    (explained variance = 1 - FVU)."""
    y = y_BCHW.double()
    err = (y - y_hat_BCHW.double()).pow(2).sum()
    var = (y - y.mean(dim=(0, 2, 3), keepdim=True)).pow(2).sum()
    return (err / var).item()


def auxk_loss(model: Transcoder, pre_BFHW: torch.Tensor, resid_BCHW: torch.Tensor, dead_F: torch.Tensor,
              k_aux: int) -> torch.Tensor:
    """AuxK loss (Gao et al. 2024, App A.2): the ``k_aux`` largest pre-activations among
    the dead latents (``dead_F``), decoded without bias, reconstruct the main model's
    residual ``resid_BCHW`` (normalised units, detached); squared error over the
    residual's variance. Zero when no latent is dead."""
    n_dead = int(dead_F.sum())
    if n_dead == 0 or k_aux <= 0:
        return pre_BFHW.new_zeros((), dtype=torch.float32)
    pre_BFHW = pre_BFHW.float()
    scores_BFHW = pre_BFHW.masked_fill(~dead_F[None, :, None, None], -torch.inf)
    aux_BFHW = topk_per_position(scores_BFHW, pre_BFHW, min(k_aux, n_dead))
    e_hat_BCHW = torch.einsum("bfhw,fc->bchw", aux_BFHW, model.W_dec_FC)
    resid_BCHW = resid_BCHW.detach().float()
    var = (resid_BCHW - resid_BCHW.mean(dim=(0, 2, 3), keepdim=True)).pow(2).sum(dim=1).mean()
    return (e_hat_BCHW - resid_BCHW).pow(2).sum(dim=1).mean() / var.clamp_min(1e-12)


def _reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _is_primary() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@torch.no_grad()
def init_from_sample_(model: Transcoder, in_BCHW: torch.Tensor, out_BCHW: torch.Tensor,
                      dataset_norm: bool = True) -> None:
    """Data-dependent initialisation from a sample of cached activations: dataset-wise
    normalisation factors (the authors' release, App J.1) and the decoder bias at the target mean."""
    y = hook_target(model.cfg, in_BCHW, out_BCHW).float()
    if dataset_norm:
        model.set_dataset_norm_(in_BCHW.float().norm(dim=1).mean().item(), y.norm(dim=1).mean().item())
    model.b_dec_C.copy_(y.mean(dim=(0, 2, 3)) * model.out_scale)


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    fvu: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    dead_frac: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def train_transcoder(model: Transcoder, batches: BatchSource, cfg: TrainConfig, device: torch.device | str = "cpu",
                     checkpoint: str | Path | None = None, progress: bool = True) -> History:
    """Train ``model`` in place for ``cfg.steps`` steps on ``batches(start_step)``.

    The loss is the squared error summed over channels, averaged over images and
    positions, in the normalised units (eq. 42 with TopK and no sparsity penalty).
    With ``checkpoint``, the run saves there (atomically) and resumes from it. With
    ``cfg.aux_k > 0`` the AuxK loss (weight ``cfg.aux_coef``) is added; a latent is
    dead once it fired in none of the last ``cfg.dead_window`` steps.
    """
    device = torch.device(device)
    model.to(device)
    distributed = dist.is_available() and dist.is_initialized()
    net = DistributedDataParallel(model) if distributed else model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    history, start = History(), 0
    since_fired_F = torch.zeros(model.cfg.d_sae, dtype=torch.long, device=device)  # steps since a latent fired
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=False)
        except Exception as err:  # truncated or foreign file
            raise RuntimeError(f"training checkpoint {checkpoint} is unreadable ({err}); delete it to restart "
                               "training from scratch") from err
        model.load_state_dict(state["model"]["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        since_fired_F.copy_(state["since_fired"])
        history, start = History(**state["history"]), state["step"]
    use_amp = cfg.amp and device.type == "cuda"

    def save(step: int) -> None:
        if checkpoint is None or not _is_primary():
            return
        with atomic_path(checkpoint) as tmp:
            torch.save({"model": model.checkpoint(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "step": step, "history": vars(history), "since_fired": since_fired_F.cpu()}, tmp)

    data = batches(start)
    bar = tqdm(range(start, cfg.steps), desc="transcoder", disable=not (progress and _is_primary()), initial=start,
               total=cfg.steps)
    for step in bar:
        x_BCHW, y_out_BCHW = (t.to(device, torch.float32, non_blocking=True) for t in next(data))
        y_BCHW = hook_target(model.cfg, x_BCHW, y_out_BCHW)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            y_hat_BCHW, acts_BFHW, pre_BFHW = net(x_BCHW, return_acts=True, return_pre=True)
        resid_BCHW = (y_BCHW - y_hat_BCHW.float()) * model.out_scale
        loss = resid_BCHW.pow(2).sum(dim=1).mean()
        if cfg.aux_k > 0:
            dead_F = since_fired_F >= cfg.dead_window
            loss = loss + cfg.aux_coef * auxk_loss(model, pre_BFHW, resid_BCHW, dead_F, cfg.aux_k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        model.normalise_decoder_()

        with torch.no_grad():
            fired_F = _reduce_sum((acts_BFHW != 0).any(dim=3).any(dim=2).sum(dim=0).float()) > 0
            since_fired_F = torch.where(fired_F, 0, since_fired_F + 1)
            dead_frac = ((since_fired_F >= cfg.dead_window).float().mean().item() if step + 1 >= cfg.dead_window
                         else float("nan"))
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                y = y_BCHW.double()
                stats = torch.stack([
                    (y - y_hat_BCHW.double()).pow(2).sum(), y.pow(2).sum(),
                    torch.tensor(float(y.shape[0] * y.shape[2] * y.shape[3]), dtype=torch.float64, device=device),
                    (acts_BFHW != 0).sum().double(), loss.detach().double(),
                ])
                err, sum_sq, n, nnz, loss_sum = _reduce_sum(stats).tolist()
                sum_sq_of_sums = _reduce_sum(y.sum(dim=(0, 2, 3))).pow(2).sum().item()
                world = dist.get_world_size() if distributed else 1
                history.step.append(step)
                history.loss.append(loss_sum / world)  # includes the AuxK term when on
                history.fvu.append(err / (sum_sq - sum_sq_of_sums / n))
                history.l0.append(nnz / n)
                history.dead_frac.append(dead_frac)
                history.lr.append(sched.get_last_lr()[0])
                bar.set_postfix(fvu=f"{history.fvu[-1]:.3f}", l0=f"{history.l0[-1]:.1f}", dead=f"{dead_frac:.2f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save(step + 1)
    save(cfg.steps)
    return history


@dataclass(frozen=True)
class EvalResult:
    fvu: float
    explained_variance: float
    l0: float
    dead_frac: float
    n_positions: int


@torch.no_grad()
def evaluate_transcoder(model: Transcoder, batches: Iterable[Batch], device: torch.device | str = "cpu") -> EvalResult:
    """FVU against the global per-channel mean (float64), mean L0 per position, and
    the fraction of features that never fire, over all of ``batches``."""
    device = torch.device(device)
    model.to(device).eval()
    err = sum_sq = 0.0
    sum_C = None
    n = nnz = 0
    fired_F = torch.zeros(model.cfg.d_sae, dtype=torch.bool, device=device)
    for x_BCHW, y_out_BCHW in batches:
        x_BCHW, y_out_BCHW = x_BCHW.to(device, torch.float32), y_out_BCHW.to(device, torch.float32)
        y = hook_target(model.cfg, x_BCHW, y_out_BCHW).double()
        acts_BFHW = model.encode(x_BCHW)
        err += (y - model.decode(acts_BFHW).double()).pow(2).sum().item()
        sum_sq += y.pow(2).sum().item()
        sum_C = y.sum(dim=(0, 2, 3)) if sum_C is None else sum_C + y.sum(dim=(0, 2, 3))
        n += y.shape[0] * y.shape[2] * y.shape[3]
        nnz += (acts_BFHW != 0).sum().item()
        fired_F |= (acts_BFHW != 0).any(dim=3).any(dim=2).any(dim=0)
    if n == 0:
        raise ValueError("evaluate_transcoder got no batches")
    total_var = sum_sq - sum_C.pow(2).sum().item() / n
    value = err / total_var
    return EvalResult(value, 1 - value, nnz / n, 1 - fired_F.float().mean().item(), n)


@torch.no_grad()
def classification_accuracy(backbone: HookedBackbone, dataset, label_factor: str, batch_size: int = 64,
                            device: torch.device | str = "cpu", transcoder: Transcoder | None = None) -> float:
    """Top-1 accuracy of ``backbone`` on ``dataset`` (items ``(image, factors)``), with
    the hooked block replaced by ``transcoder`` when one is given (spliced evaluation)."""
    device = torch.device(device)
    correct = total = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    ctx = spliced(backbone, transcoder) if transcoder is not None else contextlib.nullcontext()
    with ctx:
        for images_BCHW, factors in loader:
            if label_factor not in factors:
                raise KeyError(f"dataset items have no factor {label_factor!r}; they have {sorted(factors)}")
            pred_B = backbone(images_BCHW.to(device)).argmax(dim=1).cpu()
            correct += (pred_B == factors[label_factor]).sum().item()
            total += pred_B.numel()
    return correct / max(total, 1)


def fit_transcoder(cache, model_cfg: TranscoderConfig, train_cfg: TrainConfig, batch_size: int, seed: int,
                   device: torch.device | str = "cpu", checkpoint: str | Path | None = None,
                   progress: bool = True) -> tuple[Transcoder, History]:
    """Initialise a transcoder from a sample of ``cache`` (an
    :class:`klsc_lib.sae.activation_cache.ActivationCache`) and train it on shuffled cached
    batches of ``batch_size`` images (the global batch: under DDP each rank reads its
    own slice); a finished ``checkpoint`` is simply loaded, an unfinished one resumed."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model = Transcoder(model_cfg, generator=torch.Generator().manual_seed(seed))
    sample = cache.sample(min(len(cache), 256), seed=seed)
    init_from_sample_(model, sample.in_BCHW, sample.out_BCHW)
    history = train_transcoder(
        model, lambda start: cache.shuffled(batch_size, seed, start, rank=rank, world_size=world_size), train_cfg,
        device, checkpoint=checkpoint, progress=progress)
    return model.eval(), history
