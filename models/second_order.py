"""Three optimizers the course teaches that PyTorch does not ship: Newton's method, nonlinear conjugate
gradients and BFGS with its dense inverse-Hessian approximation. All are full-batch methods with a line
search, driven through a closure.

Their closure returns the loss *without* calling ``backward``: they take the gradients (and, for Newton,
second derivatives) themselves with ``torch.autograd.grad``.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lbfgs import _strong_wolfe

from models.errors import ConfigError


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for p in like:
        out.append(vector[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


class LineSearchOptimizer(Optimizer):
    """Shared parts: the parameter list, taking a gradient, a backtracking (Armijo) line search, and
    ``max_iter`` iterations per ``step`` (as in ``torch.optim.LBFGS``), stopping early once the gradient
    vanishes or the line search finds no decrease."""

    closure_returns_loss_only = True

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self._params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _iterate(self, closure) -> tuple[torch.Tensor, float, float]:
        """One iteration; returns the loss before it, the gradient's norm and the step length taken."""
        raise NotImplementedError

    def step(self, closure):  # type: ignore[override]
        group = self.param_groups[0]
        first = None
        for _ in range(group["max_iter"]):
            loss, grad_norm, step = self._iterate(closure)
            first = loss if first is None else first
            if grad_norm <= group["tolerance_grad"] or step == 0.0:
                break
        return first

    def _gradient(self, closure: Callable[[], torch.Tensor], create_graph: bool = False):
        # cuDNN's RNN kernels have no double backward; second derivatives need PyTorch's own kernels.
        no_cudnn = torch.backends.cudnn.flags(enabled=False) if create_graph else contextlib.nullcontext()
        with torch.enable_grad(), no_cudnn:
            loss = closure()
            grads = torch.autograd.grad(loss, self._params, create_graph=create_graph)
        return loss, grads

    @torch.no_grad()
    def _set(self, vector: torch.Tensor) -> None:
        for p, v in zip(self._params, _unflat(vector, self._params)):
            p.copy_(v)

    def _wolfe_step(self, closure, loss: float, g: torch.Tensor, direction: torch.Tensor, gd: float, trial: float,
                    c2: float) -> float:
        """Step along ``direction`` as far as PyTorch's strong-Wolfe line search (the one ``LBFGS`` uses) says;
        returns the step length taken."""
        x = _flat(self._params).detach().clone()

        def evaluate(x0: torch.Tensor, t: float, d: torch.Tensor):
            self._set(x0 + t * d)
            f, gr = self._gradient(closure)
            return float(f.detach()), _flat(gr).detach()

        _, _, t, _ = _strong_wolfe(evaluate, x, trial, direction, loss, g, gd, c2=c2)
        self._set(x + t * direction)
        return float(t)

    @torch.no_grad()
    def _line_search(self, closure, loss: float, gd: float, direction: torch.Tensor, step: float,
                     max_steps: int, c1: float = 1e-4) -> float:
        """Halve ``step`` until the loss falls enough (Armijo); returns the step taken, 0.0 if none was."""
        start = _flat(self._params).clone()
        for _ in range(max_steps):
            self._set(start + step * direction)
            if float(closure()) <= loss + c1 * step * gd:
                return step
            step *= 0.5
        self._set(start)
        return 0.0


class Newton(LineSearchOptimizer):
    """Damped Newton's method with a line search.

    While the model has at most ``max_exact_params`` parameters (logistic regression on 8x8 digits has
    650), the exact Hessian is built from batched Hessian-vector products (vmap over the backward pass) and
    the damped system is solved directly. Above that, the Newton step is found Hessian-free, by conjugate
    gradients on Hessian-vector products (Newton-CG), stopping at negative curvature.
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 1e-4, max_exact_params: int = 1000,
                 cg_iterations: int = 50, cg_tolerance: float = 1e-5, max_iter: int = 5,
                 tolerance_grad: float = 1e-7, line_search_steps: int = 30):
        super().__init__(params, dict(lr=lr, damping=damping, max_exact_params=max_exact_params,
                                      cg_iterations=cg_iterations, cg_tolerance=cg_tolerance, max_iter=max_iter,
                                      tolerance_grad=tolerance_grad, line_search_steps=line_search_steps))

    def _exact_direction(self, g: torch.Tensor, grads, damping: float) -> torch.Tensor:
        n = g.numel()
        eye = torch.eye(n, dtype=g.dtype, device=g.device)
        try:
            rows = torch.autograd.grad(grads, self._params, grad_outputs=_unflat_batched(eye, self._params),
                                       is_grads_batched=True, retain_graph=True)
            hessian = torch.cat([r.reshape(n, -1) for r in rows], dim=1)
        except RuntimeError:  # an op without a batching rule: one Hessian-vector product per column
            hessian = torch.stack([self._hvp(grads, eye[i]) for i in range(n)])
        hessian = 0.5 * (hessian + hessian.T)
        while True:  # grow the damping until H + damping*I is positive definite
            factor, info = torch.linalg.cholesky_ex(hessian + damping * eye)
            if int(info) == 0:
                return torch.cholesky_solve(-g.unsqueeze(1), factor).squeeze(1)
            damping = max(damping * 10, 1e-6)

    def _hvp(self, grads, vector: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(grads, self._params, grad_outputs=_unflat(vector, self._params), retain_graph=True)
        return _flat(hv)

    def _cg_direction(self, g: torch.Tensor, grads, damping: float, iterations: int, tol: float) -> torch.Tensor:
        x = torch.zeros_like(g)
        r = -g.clone()
        d = r.clone()
        rr = r @ r
        for _ in range(iterations):
            hd = self._hvp(grads, d) + damping * d
            curvature = d @ hd
            if curvature <= 0:  # negative curvature: stop with what we have, or steepest descent
                return x if x.abs().sum() > 0 else -g
            alpha = rr / curvature
            x += alpha * d
            r -= alpha * hd
            rr_new = r @ r
            if rr_new.sqrt() <= tol * g.norm():
                break
            d = r + (rr_new / rr) * d
            rr = rr_new
        return x

    def _iterate(self, closure):
        group = self.param_groups[0]
        # Levenberg-Marquardt style: the damping shrinks while full Newton steps succeed and grows when the
        # line search has to cut the step, which keeps non-convex problems (networks) moving downhill.
        damping = float(self.state["newton"]["damping"]) if "newton" in self.state else group["damping"]
        loss, grads = self._gradient(closure, create_graph=True)
        g = _flat(grads).detach()
        if g.numel() <= group["max_exact_params"]:
            direction = self._exact_direction(g, grads, damping)
        else:
            direction = self._cg_direction(g, grads, damping, group["cg_iterations"], group["cg_tolerance"])
        gd = float(g @ direction)
        if gd >= 0:  # not a descent direction: fall back to the gradient
            direction, gd = -g, -float(g @ g)
        loss = loss.detach()
        step = self._line_search(closure, float(loss), gd, direction, group["lr"], group["line_search_steps"])
        damping = max(damping / 3, group["damping"]) if step == group["lr"] else min(damping * 10, 1e8)
        self.state["newton"] = {"damping": torch.tensor(damping)}
        return loss, float(g.norm()), step if damping < 1e8 else 0.0


def _unflat_batched(matrix: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for p in like:
        out.append(matrix[:, offset : offset + p.numel()].reshape(matrix.shape[0], *p.shape))
        offset += p.numel()
    return out


class ConjugateGradient(LineSearchOptimizer):
    """Nonlinear conjugate gradients, Polak-Ribiere+ (beta never below zero), restarted to steepest descent
    every ``restart_every`` iterations or whenever the direction stops going downhill.

    The line search is PyTorch's strong-Wolfe search (the one ``LBFGS`` uses) with ``c2 = 0.1``: PR+ needs
    a fairly exact line search to keep its directions downhill. Its first trial step follows Nocedal and
    Wright (3.60): the last step scaled by the change in the directional derivative."""

    def __init__(self, params, lr: float = 1.0, restart_every: int = 50, max_iter: int = 20,
                 tolerance_grad: float = 1e-7):
        super().__init__(params, dict(lr=lr, restart_every=restart_every, max_iter=max_iter,
                                      tolerance_grad=tolerance_grad))

    def _iterate(self, closure):
        group, state = self.param_groups[0], self.state["cg"] if "cg" in self.state else {}
        loss, grads = self._gradient(closure)
        loss, g = loss.detach(), _flat(grads).detach()
        k = int(state.get("k", 0))
        if k % group["restart_every"] == 0 or "g" not in state:
            d = -g
        else:
            g_prev, d_prev = state["g"], state["d"]
            beta = max(0.0, float(g @ (g - g_prev)) / max(float(g_prev @ g_prev), 1e-30))
            d = -g + beta * d_prev
        gd = float(g @ d)
        if gd >= 0:
            d, gd = -g, -float(g @ g)
        if "t" in state and float(state["t"]) > 0:
            trial = min(1.0, 1.01 * float(state["t"]) * float(state["gd"]) / gd) if gd else group["lr"]
        else:
            trial = min(1.0, 1.0 / float(g.abs().sum())) * group["lr"]

        t = self._wolfe_step(closure, float(loss), g, d, gd, trial, c2=0.1)
        self.state["cg"] = {"g": g, "d": d, "t": torch.tensor(float(t)), "gd": torch.tensor(gd), "k": k + 1}
        return loss, float(g.norm()), float(t)


class BFGS(LineSearchOptimizer):
    """BFGS with the dense inverse-Hessian approximation, as the course teaches it beside Newton and conjugate
    gradients (``lbfgs`` keeps only the last few curvature pairs instead).

    Each iteration steps along ``-H g`` with PyTorch's strong-Wolfe line search (``c2 = 0.9``, the usual
    quasi-Newton setting), then updates ``H`` from the step ``s`` and the change in gradient ``y`` (Nocedal
    and Wright, 6.17), skipping the update when ``y.s`` is not positive. The first ``H`` is the identity,
    rescaled after the first step by ``y.s / y.y`` (6.20), as SciPy's BFGS does. ``H`` has n x n entries, so
    models are limited to :data:`BFGS_MAX_PARAMS` parameters."""

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, tolerance_grad: float = 1e-7):
        super().__init__(params, dict(lr=lr, max_iter=max_iter, tolerance_grad=tolerance_grad))
        n = sum(p.numel() for p in self._params)
        if n > BFGS_MAX_PARAMS:
            raise ConfigError(bfgs_too_large(n))

    def _iterate(self, closure):
        group, state = self.param_groups[0], self.state["bfgs"] if "bfgs" in self.state else {}
        loss, grads = self._gradient(closure)
        loss, g = loss.detach(), _flat(grads).detach()
        if "h" in state:
            s, y = _flat(self._params).detach() - state["x"], g - state["g"]
            ys = float(y @ s)
            h = state["h"]
            if ys > 1e-10:
                if int(state["k"]) == 1:  # scale the identity to the curvature just seen
                    h = torch.eye(g.numel(), dtype=g.dtype, device=g.device) * (ys / float(y @ y))
                # H + (ys + y.Hy) ss'/ys^2 - (Hy s' + s Hy')/ys, as two in-place rank-1 updates: the matrix is
                # the large thing here (268 MB at the limit), so it is read and written as few times as can be.
                hy = h @ y
                h.addr_(s, s * ((ys + float(y @ hy)) / ys ** 2) - hy / ys)
                h.addr_(hy, s, alpha=-1.0 / ys)
        else:
            h = torch.eye(g.numel(), dtype=g.dtype, device=g.device)
        d = -(h @ g)
        gd = float(g @ d)
        if gd >= 0:  # the approximation went bad: restart from the identity
            h = torch.eye(g.numel(), dtype=g.dtype, device=g.device)
            d, gd = -g, -float(g @ g)
        x = _flat(self._params).detach().clone()
        trial = group["lr"] if "h" in state else min(1.0, 1.0 / float(g.abs().sum())) * group["lr"]
        t = self._wolfe_step(closure, float(loss), g, d, gd, trial, c2=0.9)
        self.state["bfgs"] = {"h": h, "x": x, "g": g, "k": torch.tensor(int(state.get("k", 0)) + 1)}
        return loss, float(g.norm()), float(t)


# The dense approximation of an 8,192-parameter model is 8,192^2 floats (268 MB in float32): logistic
# regression on 28x28 images (7,850 parameters) fits; larger models are for lbfgs.
BFGS_MAX_PARAMS = 8192


def bfgs_too_large(n: int) -> str:
    return (f"bfgs keeps a dense {n:,} x {n:,} matrix: this model has {n:,} parameters, more than bfgs's "
            f"{BFGS_MAX_PARAMS:,}; use lbfgs (the same method with a few vectors instead of the matrix), or a "
            "smaller model")
