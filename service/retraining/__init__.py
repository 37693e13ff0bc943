"""Retraining policies: a model name trained again by itself on drift, falling live accuracy or a schedule,
then rolled out through the canary gates."""
