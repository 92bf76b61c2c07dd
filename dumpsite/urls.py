from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from datasets.api import AnnotationViewSet, DatasetImageViewSet, DatasetImportViewSet, DatasetViewSet
from datasets.views import image_thumbnail
from dumpsite.auth_views import ObtainTokenView
from models_registry.api import TrainedModelViewSet
from models_registry.api_evaluations import EvaluationViewSet
from models_registry.api_predictions import PredictionViewSet
from training.api import TrainingRunViewSet

router = DefaultRouter()
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("dataset-imports", DatasetImportViewSet, basename="datasetimport")
router.register("images", DatasetImageViewSet, basename="datasetimage")
router.register("annotations", AnnotationViewSet, basename="annotation")
router.register("training-runs", TrainingRunViewSet, basename="trainingrun")
router.register("trained-models", TrainedModelViewSet, basename="trainedmodel")
router.register("predictions", PredictionViewSet, basename="prediction")
router.register("evaluations", EvaluationViewSet, basename="evaluation")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("datasets/images/<int:pk>/thumbnail.jpg", image_thumbnail, name="dataset-image-thumbnail"),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("api/auth/", include("rest_framework.urls")),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
