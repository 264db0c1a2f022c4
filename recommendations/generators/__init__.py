"""Recommendation generators: one module per kind, each with a ``generate(context)`` function
(see :mod:`recommendations.generators.base`); :mod:`recommendations.generators.registry` lists them.
Nothing is imported here, so ``generators.base`` can be imported by the selectors the generators use."""
