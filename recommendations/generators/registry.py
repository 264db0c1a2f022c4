"""The generators, by recommendation kind (each one module with a ``generate(context)`` function;
see :mod:`recommendations.generators.base`)."""

from recommendations.generators import (
    batch_api,
    cheaper_model,
    cheaper_provider,
    output_cap,
    prompt_cache,
    response_cache,
)
from recommendations.models import RecommendationKind

GENERATORS = {
    RecommendationKind.CHEAPER_MODEL: cheaper_model.generate,
    RecommendationKind.RESPONSE_CACHE: response_cache.generate,
    RecommendationKind.PROMPT_CACHE: prompt_cache.generate,
    RecommendationKind.BATCH_API: batch_api.generate,
    RecommendationKind.OUTPUT_CAP: output_cap.generate,
    RecommendationKind.CHEAPER_PROVIDER: cheaper_provider.generate,
}
