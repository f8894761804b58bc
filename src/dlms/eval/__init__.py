"""Evaluation, kept outside the models: likelihoods and generation figures."""
