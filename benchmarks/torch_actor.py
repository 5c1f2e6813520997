"""The PyTorch reference actor: the same tanh-Gaussian policy and loss, written for PyTorch.

It runs on `default_device()`: CUDA when torch sees a GPU, else the CPU.

Imported only when torch is installed (`pip install -e ".[bench]"`). It mirrors
`dreamer_actor` exactly so that timings compare like with like:

  * trunk: `layers` x (Linear without bias, LayerNorm(eps=1e-3), SiLU), then a Linear
    to `2 * A` outputs split into the raw mean and raw log-std;
  * head: `mean = mean_limit * tanh(raw / mean_limit)`,
    `log_std = lo + (hi - lo) * sigmoid(raw + offset)` (offset: raw = 0 gives `init_std`);
  * sample `u = mean + exp(log_std) * eps` (no gradient), `a = tanh(u) * scale + bias`;
  * `log p(a) = log N(u; mean, std) - sum_i [log scale_i + log(1 - tanh(u_i)^2)]` with
    `log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`;
  * entropy estimate: Gaussian entropy + the Jacobian term at `u = mean + std * sg(eps)`;
  * loss `-mean(sg(adv) * log_prob + coef * entropy)`.

`from_flax` copies a `dreamer_actor.Actor`'s parameters into the module, so both
frameworks can be run on the same weights and checked against each other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_2PIE = 0.5 * math.log(2.0 * math.pi * math.e)
_LOG2 = math.log(2.0)


def default_device() -> str:
    """`"cuda"` when torch sees a GPU, else `"cpu"` (the JAX side runs on JAX's default device)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device: str) -> None:
    """Waits for queued kernels (CUDA launches are asynchronous; on the CPU there is nothing to wait for)."""
    if device == "cuda":
        torch.cuda.synchronize()


class TorchActor(nn.Module):
    """MLP trunk + tanh-Gaussian head parameters, as `dreamer_actor.Actor` (tanh_normal, LayerNorm, SiLU).

    Args:
      in_dim: width of the flattened latent (`H + S * C`).
      action_dim: `A`.
      layers, units: trunk depth and width.
      log_std_min, log_std_max, init_std, mean_limit: as in `ActorConfig`.
    """

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        *,
        layers: int = 3,
        units: int = 256,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        init_std: float = 1.0,
        mean_limit: float | None = 5.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, units, bias=False), nn.LayerNorm(units, eps=1e-3), nn.SiLU()]
            width = units
        self.trunk = nn.Sequential(*blocks)
        self.out = nn.Linear(width, 2 * action_dim)
        self.action_dim = action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.mean_limit = mean_limit
        frac = (math.log(init_std) - log_std_min) / (log_std_max - log_std_min)
        self.offset = math.log(frac / (1.0 - frac))

    def raw(self, hidden: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """`[..., H]`, `[..., S, C]` -> raw outputs `[..., 2A]` (the bare trunk)."""
        x = torch.cat([hidden, stoch.flatten(-2)], dim=-1)
        return self.out(self.trunk(x))

    def head(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs `[..., 2A]` -> `(mean, log_std)`, each `[..., A]`."""
        raw_mean, raw_std = raw.chunk(2, dim=-1)
        mean = raw_mean if self.mean_limit is None else self.mean_limit * torch.tanh(raw_mean / self.mean_limit)
        lo, hi = self.log_std_min, self.log_std_max
        return mean, lo + (hi - lo) * torch.sigmoid(raw_std + self.offset)

    def forward(self, hidden: torch.Tensor, stoch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.raw(hidden, stoch))

    @classmethod
    def from_flax(cls, params: Any, config: Any, in_dim: int, device: str = "cpu") -> TorchActor:
        """A `TorchActor` on `device` holding a copy of a flax `Actor`'s variables (`config`: its `ActorConfig`)."""
        if config.distribution != "tanh_normal" or config.norm != "layer" or config.activation != "silu":
            raise ValueError("TorchActor.from_flax: only tanh_normal + LayerNorm + SiLU actors are mirrored.")
        model = cls(
            in_dim,
            config.action_dim,
            layers=config.layers,
            units=config.units,
            log_std_min=config.log_std_min,
            log_std_max=config.log_std_max,
            init_std=config.init_std,
            mean_limit=config.mean_limit,
        )
        p = params["params"]

        def tensor(x: Any) -> torch.Tensor:
            return torch.from_numpy(np.array(x, dtype=np.float32))

        with torch.no_grad():
            for i in range(config.layers):
                model.trunk[3 * i].weight.copy_(tensor(p[f"dense_{i}"]["kernel"]).T)
                model.trunk[3 * i + 1].weight.copy_(tensor(p[f"norm_{i}"]["scale"]))
                model.trunk[3 * i + 1].bias.copy_(tensor(p[f"norm_{i}"]["bias"]))
            model.out.weight.copy_(tensor(p["out"]["kernel"]).T)
            model.out.bias.copy_(tensor(p["out"]["bias"]))
        return model.to(device)


def log1m_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """`log(1 - tanh(u)^2)`, stable: `2 (log 2 - u - softplus(-2u))`."""
    return 2.0 * (_LOG2 - u - nn.functional.softplus(-2.0 * u))


def log_prob(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Tanh-Gaussian log-density at pre-squash `u`, `[..., A] -> [...]`."""
    z = (u - mean) * torch.exp(-log_std)
    gaussian = (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)
    return gaussian - (torch.log(scale) + log1m_tanh_sq(u)).sum(-1)


def entropy_estimate(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """One-sample entropy estimate with pathwise gradients, `[..., A] -> [...]`."""
    std = torch.exp(log_std)
    eps = ((u - mean) / std).detach()
    u_path = mean + std * eps
    return (_HALF_LOG_2PIE + log_std).sum(-1) + (torch.log(scale) + log1m_tanh_sq(u_path)).sum(-1)


def head_loss(
    mean: torch.Tensor,
    log_std: torch.Tensor,
    eps: torch.Tensor,
    advantage: torch.Tensor,
    scale: torch.Tensor,
    entropy_coef: float = 3e-4,
) -> torch.Tensor:
    """Sample `u` (given the noise), log-prob, entropy and the REINFORCE loss (a scalar).

    The action `tanh(u) * scale + bias` is not formed: the loss does not need it (and
    XLA removes it from the JAX version as dead code).
    """
    u = (mean + torch.exp(log_std) * eps).detach()
    lp = log_prob(mean, log_std, u, scale)
    ent = entropy_estimate(mean, log_std, u, scale)
    return -(advantage.detach() * lp + entropy_coef * ent).mean()


def act(
    model: TorchActor,
    hidden: np.ndarray,
    stoch: np.ndarray,
    scale: torch.Tensor,
    bias: torch.Tensor,
) -> np.ndarray:
    """Acting end to end: host arrays in, a sampled host action `[..., A]` out (on `scale`'s device)."""
    device = scale.device
    with torch.no_grad():
        mean, log_std = model(torch.from_numpy(hidden).to(device), torch.from_numpy(stoch).to(device))
        u = mean + torch.exp(log_std) * torch.randn_like(mean)
        return (torch.tanh(u) * scale + bias).cpu().numpy()
