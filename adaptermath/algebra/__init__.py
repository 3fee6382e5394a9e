"""Pure functions on adapter modules: the paper's parameter-space operators, exact delta-space
arithmetic, low-rank compression and the shared-initialisation diagnostic."""
