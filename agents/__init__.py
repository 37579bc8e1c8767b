"""Stable-Baselines3 side of vase_rl (installed as ``vase_rl.agents``)."""
