#!/usr/bin/python3
"""schedules_libs.py - our own reimplementation of the EMA of six libraries,
written from their documented behaviour (and their published source, read,
not imported: none of them is installed), for tests/test_schedules.sh.

Each library is reduced to the sequence of decays its k-th update uses,
computed the way the library computes it, as a list of (step, decay) where
step is the training step we push that update at and decay 0.0 means the
library copies the value into the shadow (its first update, or a warm-up
step). A decay of None marks an update whose result is a copy in the
library but where its arithmetic is not an exact copy (diffusers).

    TensorFlow  tf.train.ExponentialMovingAverage(decay, num_updates=step)
        apply() at global step t uses min(decay, (1 + t) / (10 + t)); the
        shadow starts as the variable's value (TF2 eager: read at the first
        apply(), whose update is then a no-op). TF evaluates the decay in
        float32 and then 1 - decay in float32: tf_c32().
    torch_ema   ExponentialMovingAverage(params, decay, use_num_updates=True)
        shadow copied at construction; update() increments num_updates
        first, so the k-th update uses min(decay, (1 + k) / (10 + k)).
    timm        ModelEmaV3(decay, min_decay, update_after_step=U, use_warmup,
                warmup_gamma, warmup_power).update(model, step=t)
        get_decay: s = max(0, t - U - 1); s <= 0 -> 0 (lerp weight 1: copy);
        warmup: max(min(1 - (1 + s/gamma)**-power, decay), min_decay);
        else decay. Applied with ema.lerp_(model, 1 - decay).
    ema-pytorch EMA(beta, update_after_step=U, update_every=1, inv_gamma,
                power, min_value).update()
        the k-th update reads step = k - 1, then sets self.step = k; the
        first update copies (initted False), then step <= U copies, else
        lerp_(model, 1 - decay) with epoch = self.step - U - 1 and decay =
        clamp(1 - (1 + epoch/inv_gamma)**-power, min_value, beta), computed
        on a torch tensor: float32 (emapt_decay_torch()).
    diffusers   EMAModel(decay, min_decay, update_after_step=U,
                use_ema_warmup, inv_gamma, power).step()
        optimization_step += 1 first; get_decay: s = max(0, opt - U - 1);
        s <= 0 -> 0; warmup 1 - (1 + s/inv_gamma)**-power, else
        (1 + s) / (10 + s); then min(., decay), max(., min_decay); the
        update is s_param.sub_((1 - decay) * (s_param - param)), so its
        "copy" at decay 0 is S - 1.0 * (S - x), not always x.
    AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                use_buffers=True) (PyTorch >= 2.1; on older torch the same
                per-tensor function through avg_fn=)
        first update_parameters() copies (n_averaged == 0), then floating
        tensors: torch._foreach_lerp_(ema, model, 1 - decay); others:
        ema.copy_(ema * decay + model * (1 - decay)) (truncates integers).
"""


def tf_schedule(decay, steps):
    """TF: the first apply() leaves the shadow at the value (a copy); apply at
    global step t then uses min(decay, (1 + t) / (10 + t)) (float64 here)."""
    out = []
    for i, t in enumerate(steps):
        out.append((t, 0.0 if i == 0 else min(decay, (1.0 + t) / (10.0 + t))))
    return out


def tf_c32(decay, t):
    """1 - decay as TF computes it: decay and num_updates are float32
    tensors, min(decay, (1 + n) / (10 + n)) and 1 - decay in float32."""
    import numpy as np

    one, n = np.float32(1.0), np.float32(t)
    d = min(np.float32(decay), (one + n) / (np.float32(10.0) + n))
    return one - d


def torch_ema_schedule(decay, n):
    """torch_ema with use_num_updates: the construction copies the params
    (pushed at step 0), update k (pushed at step k) uses n = k."""
    out = [(0, 0.0)]
    num_updates = 0
    for k in range(1, n + 1):
        num_updates += 1
        out.append((k, min(decay, (1.0 + num_updates) / (10.0 + num_updates))))
    return out


def timm_v3_decay(step, decay, min_decay, update_after_step, use_warmup, gamma, power):
    """timm ModelEmaV3.get_decay(step)."""
    s = max(0, step - update_after_step - 1)
    if s <= 0:
        return 0.0
    if use_warmup:
        d = 1 - (1 + s / gamma) ** -power
        return max(min(d, decay), min_decay)
    return decay


def timm_v3_schedule(n, **kw):
    """update(model, step=t) for t = 1..n."""
    return [(t, timm_v3_decay(t, **kw)) for t in range(1, n + 1)]


def emapt_decay64(self_step, beta, update_after_step, inv_gamma, power, min_value):
    """ema-pytorch get_current_decay() evaluated in Python floats (float64)."""
    epoch = max(self_step - update_after_step - 1, 0.0)
    value = 1 - (1 + epoch / inv_gamma) ** -power
    if epoch <= 0:
        return 0.0
    return min(max(value, min_value), beta)


def emapt_decay_torch(self_step, beta, update_after_step, inv_gamma, power, min_value):
    """ema-pytorch get_current_decay() as it runs: self.step is a long tensor,
    clamp(min=0.) makes epoch float32, so the decay is a float32 value."""
    import torch

    step = torch.tensor(self_step)
    epoch = (step - update_after_step - 1).clamp(min=0.0)
    value = 1 - (1 + epoch / inv_gamma) ** -power
    if epoch.item() <= 0:
        return 0.0
    return value.clamp(min=min_value, max=beta).item()


def emapt_schedule(n, decay_fn=emapt_decay64, **kw):
    """The k-th EMA.update() (k = 1..n, pushed at step k): (k, decay)."""
    out = []
    self_step = 0
    initted = False
    for k in range(1, n + 1):
        step = self_step
        self_step += 1
        if not initted:
            initted = True
            out.append((k, 0.0))
        elif step <= kw["update_after_step"]:
            out.append((k, 0.0))
        else:
            out.append((k, decay_fn(self_step, **kw)))
    return out


def diffusers_decay(optimization_step, decay, min_decay, update_after_step, use_ema_warmup,
                    inv_gamma, power):
    """diffusers EMAModel.get_decay(optimization_step)."""
    step = max(0, optimization_step - update_after_step - 1)
    if step <= 0:
        return 0.0
    if use_ema_warmup:
        cur = 1 - (1 + step / inv_gamma) ** -power
    else:
        cur = (1 + step) / (10 + step)
    cur = min(cur, decay)
    return max(cur, min_decay)


def diffusers_schedule(n, **kw):
    """EMAModel.step() k = 1..n (optimization_step incremented first)."""
    out = []
    opt = 0
    for _ in range(n):
        opt += 1
        out.append((opt, diffusers_decay(opt, **kw)))
    return out


def averaged_model_schedule(decay, n):
    """AveragedModel EMA: the first update_parameters() copies."""
    return [(t, 0.0 if t == 1 else decay) for t in range(1, n + 1)]


def ema_multi_avg_fn(decay):
    """get_ema_multi_avg_fn(decay) of PyTorch >= 2.1, or, on an older torch,
    an avg_fn applying the same per-tensor update (floating tensors: lerp
    towards the model by 1 - decay; others: ema * decay + model * (1 - decay)
    copied back, i.e. truncated). Returns (keyword, function) for
    AveragedModel(..., **{keyword: function})."""
    import torch
    from torch.optim import swa_utils

    if hasattr(swa_utils, "get_ema_multi_avg_fn"):
        return "multi_avg_fn", swa_utils.get_ema_multi_avg_fn(decay)

    def avg_fn(ema, model, _num_averaged):
        if torch.is_floating_point(ema):
            return torch.lerp(ema, model, 1 - decay)
        return ema * decay + model * (1 - decay)

    return "avg_fn", avg_fn
