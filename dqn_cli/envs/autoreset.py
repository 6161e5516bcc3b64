"""Reading a SAME_STEP-autoreset vector step (Gymnasium 1.x ``AutoresetMode.SAME_STEP``): when an
env ends, the step already returns its reset observation, and the true final observation and
the last step's infos are in ``info["final_obs"]`` and ``info["final_info"]``."""

from __future__ import annotations

import numpy as np


def final_observations(infos: dict, ended: np.ndarray, like: np.ndarray) -> np.ndarray | None:
    """The true final observations of the envs that ``ended``, as an array shaped like ``like``.

    Rows of envs that did not end are zero. None when no env ended. Gymnasium's vector envs
    give an object array with None for envs that did not end; ale-py's gives a dense array.
    """
    idx = np.flatnonzero(ended)
    if idx.size == 0:
        return None
    finals = infos.get("final_obs")
    if finals is None:
        raise RuntimeError("the vector env ended an episode without info['final_obs'] (autoreset must be SAME_STEP)")
    out = np.zeros_like(like)
    for i in idx:
        out[i] = finals[i]
    return out


def info_array(infos: dict, key: str, default: np.ndarray, ended: np.ndarray | None = None) -> np.ndarray:
    """Per-env values of ``infos[key]``; for envs that ``ended`` under SAME_STEP
    autoreset the value of their last step is in ``infos["final_info"]``.

    Envs that did not report ``key`` keep ``default``.
    """
    out = np.array(default, copy=True)
    if key in infos:
        mask = infos.get("_" + key, np.ones(len(out), dtype=bool))
        out[mask] = np.asarray(infos[key])[mask]
    if ended is not None and ended.any() and "final_info" in infos:
        final = infos["final_info"]
        if isinstance(final, dict) and key in final:
            mask = final.get("_" + key, np.ones(len(out), dtype=bool)) & ended
            out[mask] = np.asarray(final[key])[mask]
    return out
