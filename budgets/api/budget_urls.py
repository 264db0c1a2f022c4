urlpatterns: list = []  # /api/v1/budgets/ (operators)
