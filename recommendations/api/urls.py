"""/api/v1/recommendations/ — savings recommendations (API keys read; staff users act on them)."""

from django.urls import path

from recommendations.api import views

urlpatterns = [
    path("recommendations/", views.RecommendationListApi.as_view(), name="recommendations"),
    path("recommendations/<int:pk>/", views.RecommendationDetailApi.as_view(), name="recommendation-detail"),
    path("recommendations/<int:pk>/accept/", views.RecommendationAcceptApi.as_view(), name="recommendation-accept"),
    path("recommendations/<int:pk>/reject/", views.RecommendationRejectApi.as_view(), name="recommendation-reject"),
    path(
        "recommendations/<int:pk>/implement/",
        views.RecommendationImplementApi.as_view(),
        name="recommendation-implement",
    ),
    path("recommendations/<int:pk>/verify/", views.RecommendationVerifyApi.as_view(), name="recommendation-verify"),
]
