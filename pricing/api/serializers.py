"""Request / response shapes of the pricing API (the response is built in the view; these
serializers validate the request and describe both for the OpenAPI schema)."""

from rest_framework import serializers

_TOKENS = {"min_value": 0, "max_value": 10**15}
_MONEY_HELP = "USD as a decimal string, 12 decimal places at most, trailing zeros dropped; null when unpriced."


class QuoteInputSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=255, help_text="Model name as sent to the provider, e.g. openai/gpt-4o.")
    provider = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    prompt_tokens = serializers.IntegerField(**_TOKENS, help_text="All input tokens, cached ones included.")
    completion_tokens = serializers.IntegerField(**_TOKENS, help_text="All output tokens, reasoning included.")
    cached_tokens = serializers.IntegerField(**_TOKENS, default=0, help_text="Part of prompt_tokens.")
    cache_creation_tokens = serializers.IntegerField(**_TOKENS, default=0, help_text="Part of prompt_tokens.")
    reasoning_tokens = serializers.IntegerField(**_TOKENS, default=0, help_text="Part of completion_tokens.")
    batch = serializers.BooleanField(default=False, help_text="Priced at the model's batch rates when it has them.")
    at = serializers.DateTimeField(required=False, help_text="Price in effect at this moment (default: now).")

    def validate(self, attrs: dict) -> dict:
        errors = {}
        if attrs["cached_tokens"] + attrs["cache_creation_tokens"] > attrs["prompt_tokens"]:
            message = "cached_tokens + cache_creation_tokens may not exceed prompt_tokens."
            for name in ("cached_tokens", "cache_creation_tokens"):
                if attrs[name]:
                    errors[name] = [message]
        if attrs["reasoning_tokens"] > attrs["completion_tokens"]:
            errors["reasoning_tokens"] = ["reasoning_tokens may not exceed completion_tokens."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class QuoteSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="The model name as sent.")
    price_id = serializers.IntegerField(allow_null=True, help_text="The catalog price row used; null when unpriced.")
    cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    input_cost_usd = serializers.CharField(allow_null=True, help_text="Uncached input. " + _MONEY_HELP)
    cached_input_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    cache_creation_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    output_cost_usd = serializers.CharField(allow_null=True, help_text="Reasoning included. " + _MONEY_HELP)
    priced = serializers.BooleanField(help_text="False when no price is known for the model (costs are then null).")


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable error code, e.g. validation_error, not_authenticated.")
    message = serializers.CharField()
    fields = serializers.DictField(help_text="Field errors: {field: [messages]}.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
