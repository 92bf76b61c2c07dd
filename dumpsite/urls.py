from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from access.views import ObtainTokenView
from datasets.api import AnnotationViewSet, DatasetImageViewSet, DatasetImportViewSet, DatasetViewSet
from datasets.views import image_thumbnail
from detection.api.views import DetectionRunViewSet, DetectionViewSet, IgnoreZoneViewSet, OrthophotoViewSet
from detection.views import detection_crop, site_crop
from labelling.api.views import LabellingTaskViewSet
from models_registry.api import EvaluationViewSet, PredictionViewSet, TrainedModelViewSet
from monitoring.views import metrics
from notifications.api import DeliveryViewSet, NotificationSettingsView, SubscriptionViewSet
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
router.register("orthophotos", OrthophotoViewSet, basename="orthophoto")
router.register("detection-runs", DetectionRunViewSet, basename="detectionrun")
router.register("ignore-zones", IgnoreZoneViewSet, basename="ignorezone")
router.register("detections", DetectionViewSet, basename="detection")
router.register("labelling-tasks", LabellingTaskViewSet, basename="labellingtask")
router.register("webhooks", SubscriptionViewSet, basename="webhooksubscription")
router.register("webhook-deliveries", DeliveryViewSet, basename="webhookdelivery")

# Admin pages of models that moved app (the table stayed): old links and bookmarks lead to the new place.
MOVED_ADMIN = {"training/worker": "workers/worker"}

urlpatterns = [
    *(
        re_path(
            rf"^admin/{old}/(?P<rest>.*)$",
            RedirectView.as_view(url=f"/admin/{new}/%(rest)s", query_string=True, permanent=True),
        )
        for old, new in MOVED_ADMIN.items()
    ),
    path("admin/", admin.site.urls),
    path("metrics", metrics, name="metrics"),
    path("datasets/images/<int:pk>/thumbnail.jpg", image_thumbnail, name="dataset-image-thumbnail"),
    path("detection/detections/<int:pk>/crop.jpg", detection_crop, name="detection-crop"),
    path("detection/sites/<int:pk>/crop.jpg", site_crop, name="known-site-crop"),
    path("api/me/notifications/", NotificationSettingsView.as_view(), name="notification-settings"),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("api/auth/", include("rest_framework.urls")),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
