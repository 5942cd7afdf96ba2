"""Scorers: rate a tier's answer in [0, 1] so the cascade can accept it or escalate."""
