"""Published reference scores for the Atari 100k benchmark (26 games).

Data only. Each number below comes from the source named beside it. They are read
directly, except the DrQ(eps) per-game values, which are means of rliable's published
runs. Where no published number could be found, the value is ``None``.

Sources (repository, path, commit):

[D] google/dopamine, dopamine/labs/atari_100k/normalization_utils.py,
    commit a6f414ca01a81e933359a4922965178a40e0f38a
    (ATARI_RANDOM_SCORES / ATARI_HUMAN_SCORES).
[C] google-research/rliable, deep_rl_precipice_colab.ipynb, commit
    097c8f289823e0dbfb2708604c19898b8c4fa259 (the colab of Agarwal et al. 2021,
    "Deep Reinforcement Learning at the Edge of the Statistical Precipice",
    arXiv:2108.13264, bit.ly/statistical_precipice_colab): cell "Score data for
    Human and random agent" (RANDOM_SCORES / HUMAN_SCORES) and the printed output
    of cell "Load all score dicts" (median and mean human-normalised scores).
[R] eloialonso/iris, results/data/DrQ(eps).json, commit
    24326aaaa283c527f42b89b44cfdecf2665a7a16: the rliable per-run final scores of
    DrQ(eps), 100 runs per game. rliable publishes them in gs://rl-benchmark-data/atari_100k,
    which this file copies. Check: with [C]'s normalisation this file gives exactly
    the median and mean that [C] prints for DrQ(eps) (0.312901..., 0.464741...).
[S] mila-iqia/spr, analysis/100k_comparison.ipynb, commit
    2127aa2cbb1305e3f6fbb2602cbcfbeb7ceece1c: ``der_scores``, the DER per-game
    scores of van Hasselt et al. 2019 ("When to use parametric models in
    reinforcement learning?", arXiv:1906.05243) as SPR's authors (Schwarzer et al.
    2021) typed them in.
[P] Agarwal et al. 2021, arXiv:2108.13264v4. The paper has no per-game table and
    no numeric aggregate table for Atari 100k. Aggregates with 95% CIs appear only
    as plots (Fig. A.30, 10 runs per game, also shown in the colab [C] cell
    "Aggregates on Atari 100K (with 10 runs)"), so the CIs cannot be read off as numbers.

Caveat: the two DER entries come from different experiments.
PUBLISHED["DER"] is van Hasselt et al.'s own DER, with n-step 20; with
[D]/[C] normalisation it gives median 0.161 and mean 0.285.
PUBLISHED_AGGREGATES["DER"] is rliable's Dopamine re-implementation of DER
(n-step 10, 100 runs per game, final evaluation). rliable's per-run DER data
(gs://rl-benchmark-data/atari_100k/DER/) was not available here, so the
per-game means of that DER are not included.
"""

# Random-agent scores. [D] ATARI_RANDOM_SCORES; identical to [C] RANDOM_SCORES.
RANDOM = {
    "Alien": 227.8,
    "Amidar": 5.8,
    "Assault": 222.4,
    "Asterix": 210.0,
    "BankHeist": 14.2,
    "BattleZone": 2360.0,
    "Boxing": 0.1,
    "Breakout": 1.7,
    "ChopperCommand": 811.0,
    "CrazyClimber": 10780.5,
    "DemonAttack": 152.1,
    "Freeway": 0.0,
    "Frostbite": 65.2,
    "Gopher": 257.6,
    "Hero": 1027.0,
    "Jamesbond": 29.0,
    "Kangaroo": 52.0,
    "Krull": 1598.0,
    "KungFuMaster": 258.5,
    "MsPacman": 307.3,
    "Pong": -20.7,
    "PrivateEye": 24.9,
    "Qbert": 163.9,
    "RoadRunner": 11.5,
    "Seaquest": 68.4,
    "UpNDown": 533.4,
}

# Human scores. [D] ATARI_HUMAN_SCORES; identical to [C] HUMAN_SCORES.
HUMAN = {
    "Alien": 7127.7,
    "Amidar": 1719.5,
    "Assault": 742.0,
    "Asterix": 8503.3,
    "BankHeist": 753.1,
    "BattleZone": 37187.5,
    "Boxing": 12.1,
    "Breakout": 30.5,
    "ChopperCommand": 7387.8,
    "CrazyClimber": 35829.4,
    "DemonAttack": 1971.0,
    "Freeway": 29.6,
    "Frostbite": 4334.7,
    "Gopher": 2412.5,
    "Hero": 30826.4,
    "Jamesbond": 302.8,
    "Kangaroo": 3035.0,
    "Krull": 2665.5,
    "KungFuMaster": 22736.3,
    "MsPacman": 6951.6,
    "Pong": 14.6,
    "PrivateEye": 69571.3,
    "Qbert": 13455.0,
    "RoadRunner": 7845.0,
    "Seaquest": 42054.7,
    "UpNDown": 11693.2,
}

# Per-game mean raw scores after 100k agent steps.
PUBLISHED = {
    # DER, van Hasselt et al. 2019, as given in [S] (der_scores). The same numbers appear in other
    # repositories' copies (one has Frostbite 886.8, a typo beside 866.8 in the same file).
    "DER": {
        "Alien": 739.9,
        "Amidar": 188.6,
        "Assault": 431.2,
        "Asterix": 470.8,
        "BankHeist": 51.0,
        "BattleZone": 10124.6,
        "Boxing": 0.2,
        "Breakout": 1.9,
        "ChopperCommand": 861.8,
        "CrazyClimber": 16185.3,
        "DemonAttack": 508.0,
        "Freeway": 27.9,
        "Frostbite": 866.8,
        "Gopher": 349.5,
        "Hero": 6857.0,
        "Jamesbond": 301.6,
        "Kangaroo": 779.3,
        "Krull": 2851.5,
        "KungFuMaster": 14346.1,
        "MsPacman": 1204.1,
        "Pong": -19.3,
        "PrivateEye": 97.8,
        "Qbert": 1152.9,
        "RoadRunner": 9600.0,
        "Seaquest": 354.1,
        "UpNDown": 2877.4,
    },
    # DrQ(eps), Agarwal et al. 2021: the mean over the 100 published runs per game in [R]
    # (rliable's released run data), rounded to 2 decimals. [P] prints no per-game table.
    "DrQ(eps)": {
        "Alien": 865.16,
        "Amidar": 137.83,
        "Assault": 579.60,
        "Asterix": 763.59,
        "BankHeist": 232.89,
        "BattleZone": 10165.30,
        "Boxing": 9.04,
        "Breakout": 19.76,
        "ChopperCommand": 844.57,
        "CrazyClimber": 21539.00,
        "DemonAttack": 1321.55,
        "Freeway": 20.26,
        "Frostbite": 1014.20,
        "Gopher": 621.56,
        "Hero": 4167.89,
        "Jamesbond": 349.10,
        "Kangaroo": 1088.38,
        "Krull": 4402.07,
        "KungFuMaster": 11467.41,
        "MsPacman": 1218.11,
        "Pong": -9.06,
        "PrivateEye": 3.53,
        "Qbert": 1810.74,
        "RoadRunner": 11211.43,
        "Seaquest": 352.28,
        "UpNDown": 4324.50,
    },
}

# Human-normalised aggregates over the 26 games: (value, low, high), low/high being a 95% CI.
# None in a tuple: the source gives a point estimate but no CI as a number. None as the entry:
# no published number was found.
PUBLISHED_AGGREGATES = {
    "DER": {
        # No number found: [P] shows IQM and optimality gap only as plots (Fig. A.30; Fig. A.17's
        # expected-IQM axis spans 0.176-0.188 for DER).
        "iqm": None,
        # [C] "Load all score dicts" output, DER (100 runs, final eval): Median 0.18936086395020874.
        "median": (0.189, None, None),
        # [C] same output: Mean 0.35030497562762936.
        "mean": (0.350, None, None),
        "optimality_gap": None,  # no number found (plots only, [P] Fig. A.30)
    },
    "DrQ(eps)": {
        # No number found as text. Recomputed from [R] (not a published number): IQM 0.2796,
        # which matches [P] Fig. A.17, where the expected-IQM axis spans 0.272-0.284.
        "iqm": None,
        # [C] "Load all score dicts" output, DrQ(eps) (100 runs): Median 0.312901399063074.
        "median": (0.313, None, None),
        # [C] same output: Mean 0.4647412513971657.
        "mean": (0.465, None, None),
        # No number found as text. Recomputed from [R] (not a published number): 0.6305 (gamma = 1).
        "optimality_gap": None,
    },
}
