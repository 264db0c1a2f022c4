from django.urls import path

from pricing.api.views import QuoteApi

urlpatterns = [
    path("pricing/quote/", QuoteApi.as_view(), name="pricing-quote"),
]
