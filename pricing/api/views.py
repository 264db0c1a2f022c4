"""Pricing API v1: quote a usage breakdown without recording it."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from pricing.api.serializers import ErrorSerializer, QuoteInputSerializer, QuoteSerializer
from pricing.calculator import Usage, format_usd, quantize_usd
from pricing.selectors import price_quote


class ApiKeyOrSession(BasePermission):
    """An agent's API key (``request.auth`` is the key) or a logged-in operator; else 401."""

    def has_permission(self, request, view) -> bool:
        return request.auth is not None or bool(request.user and request.user.is_authenticated)


def _usd(amount):
    return None if amount is None else format_usd(quantize_usd(amount))


class QuoteApi(APIView):
    permission_classes = [ApiKeyOrSession]

    @extend_schema(
        summary="Quote a usage breakdown",
        description=(
            "Prices the token counts of one request with the catalog price in effect at `at` (default now), "
            "without recording anything. Cached and cache-write tokens are part of `prompt_tokens`, reasoning "
            "tokens part of `completion_tokens`. A model without a known price answers `priced: false` with "
            "null costs."
        ),
        request=QuoteInputSerializer,
        responses={
            200: QuoteSerializer,
            400: OpenApiResponse(ErrorSerializer, description="validation_error or malformed_json"),
            401: OpenApiResponse(ErrorSerializer, description="not_authenticated, invalid_api_key or api_key_revoked"),
        },
        examples=[
            OpenApiExample(
                "gpt-4o with a cache hit",
                request_only=True,
                value={
                    "model": "openai/gpt-4o",
                    "prompt_tokens": 1200,
                    "completion_tokens": 300,
                    "cached_tokens": 1000,
                },
            )
        ],
    )
    def post(self, request):
        serializer = QuoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        quote = price_quote(
            model=data["model"],
            provider=data["provider"],
            at=data.get("at") or timezone.now(),
            usage=Usage(
                prompt_tokens=data["prompt_tokens"],
                completion_tokens=data["completion_tokens"],
                cached_tokens=data["cached_tokens"],
                cache_creation_tokens=data["cache_creation_tokens"],
                reasoning_tokens=data["reasoning_tokens"],
                batch=data["batch"],
            ),
        )
        cost = quote.cost
        return Response(
            {
                "model": data["model"],
                "price_id": quote.price.pk if quote.price else None,
                "cost_usd": _usd(cost and cost.total_usd),
                "input_cost_usd": _usd(cost and cost.input_usd),
                "cached_input_cost_usd": _usd(cost and cost.cached_input_usd),
                "cache_creation_cost_usd": _usd(cost and cost.cache_creation_usd),
                "output_cost_usd": _usd(cost and cost.output_usd),
                "priced": cost is not None,
            }
        )
