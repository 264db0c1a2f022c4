urlpatterns: list = []  # POST /api/v1/budget-checks/ (enforcement)
