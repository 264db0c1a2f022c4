"""Placeholder until this generator lands: finds nothing."""

from recommendations.generators.base import Finding, GenerationContext


def generate(context: GenerationContext) -> list[Finding]:
    return []
