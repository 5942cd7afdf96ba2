"""Learning: prompt and answer features, the trained classifier, the verifier's training, the
prompt-only estimator and the tuner's learned candidates. Scorers in :mod:`cascade.scorers` are
thin adapters that load an artifact trained here and score with it.

* :mod:`~cascade.learn.features`: hashed and dense features of (prompt, answer samples);
* :mod:`~cascade.learn.classifier`: logistic regression, calibration, the versioned artifact, training;
* :mod:`~cascade.learn.verifier`: a verifier's examples replayed from recorded outcomes, and its training;
* :mod:`~cascade.learn.estimator`: the prompt-only estimator behind a tier's ``skip:``;
* :mod:`~cascade.learn.learned`: the tuner's learned candidates, scored out of fold.
"""
