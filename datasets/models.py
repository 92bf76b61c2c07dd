"""Image tiles annotated with boxes around waste, with their geographic placement."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.gis.db import models
from django.db.models import F, FloatField, Func, Q
from django.db.models.functions import Cast
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase


def gsd_field() -> models.GeneratedField:
    """Ground sample distance, metres per pixel: the square root of the footprint's area on the spheroid over the
    pixel count. Computed by PostgreSQL from the footprint, so whatever sets a footprint (an import, a tiling, a
    review) sets it; null without a footprint."""
    return models.GeneratedField(
        expression=Func(
            Func(
                Cast("footprint", models.PolygonField(srid=4326, geography=True)),
                function="ST_Area",
                output_field=FloatField(),
            )
            / (Cast(F("width"), FloatField()) * Cast(F("height"), FloatField())),
            function="sqrt",
            output_field=FloatField(),
        ),
        output_field=FloatField(null=True),
        db_persist=True,
        help_text="Ground sample distance in metres per pixel, from the footprint.",
    )


def dataset_image_upload_to(instance: DatasetImage, filename: str) -> str:
    # The stored name is chosen by the service (a content hash), never the uploader's file name.
    return f"datasets/{instance.dataset_id}/images/{filename}"


class Dataset(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("use_dataset", "Can train on the dataset")]

    def __str__(self) -> str:
        return self.name

    def class_names(self) -> list[str]:
        """Class names in training order: position i (0-based) is COCO category id i + 1."""
        return list(self.classes.order_by("position").values_list("name", flat=True))


class DatasetClass(models.Model):
    """One object class. ``position`` orders the classes; COCO category ids are 1..N in this order."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="classes")
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["dataset", "position"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "position"], name="datasetclass_unique_position"),
            models.UniqueConstraint(fields=["dataset", "name"], name="datasetclass_unique_name"),
            models.CheckConstraint(condition=~Q(name=""), name="datasetclass_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class DatasetImage(models.Model):
    # What its file said of its place and time (``georef.read_georeference``), set when it is built; not stored.
    georeference: Any = None

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    image = models.FileField(upload_to=dataset_image_upload_to, max_length=500)
    original_name = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    enabled = models.BooleanField(default=True)
    location = models.PointField(srid=4326, null=True, blank=True, help_text="Centre of the tile (WGS 84).")
    footprint = models.PolygonField(srid=4326, null=True, blank=True, help_text="Ground outline of the tile.")
    altitude_m = models.FloatField(null=True, blank=True, help_text="Camera altitude (EXIF GPS), metres.")
    # Ground sample distance, metres per pixel: the square root of the footprint's area on the spheroid over the
    # pixel count. Computed by PostgreSQL from the footprint, so whatever sets a footprint (an import, a tiling, a
    # review) sets it; null without a footprint.
    gsd_m = gsd_field()
    captured_at = models.DateTimeField(null=True, blank=True)
    source = models.JSONField(
        default=dict, blank=True, help_text="Where it came from, when not an upload (a reviewed detection run)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(width__gt=0) & Q(height__gt=0), name="datasetimage_positive_size"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="datasetimage_unique_content"),
        ]

    def __str__(self) -> str:
        return self.original_name or self.image.name


class Annotation(models.Model):
    """A box in pixel coordinates: (x, y) is the top-left corner; the box lies inside its image."""

    image = models.ForeignKey(DatasetImage, on_delete=models.CASCADE, related_name="annotations")
    dataset_class = models.ForeignKey(DatasetClass, on_delete=models.PROTECT, related_name="annotations")
    x = models.FloatField()
    y = models.FloatField()
    width = models.FloatField()
    height = models.FloatField()
    # Optional outline in pixel coordinates: [[x1, y1], [x2, y2], ...], inside the image.
    polygon = models.JSONField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    source = models.JSONField(
        default=dict, blank=True, help_text="Where the box came from (a reviewed detection and its reviewer)."
    )

    class Meta:
        ordering = ["image", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(x__gte=0) & Q(y__gte=0), name="annotation_inside_origin"),
            models.CheckConstraint(condition=Q(width__gt=0) & Q(height__gt=0), name="annotation_positive_size"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset_class_id} @ ({self.x:.0f}, {self.y:.0f}, {self.width:.0f}, {self.height:.0f})"


class DatasetStats(models.Model):
    """Counts and extent of a dataset, kept by PostgreSQL triggers (migration 0003), never written by Django.

    Every insert, update and delete of images and boxes adjusts them in the same statement, whatever made it (a
    service, a bulk import, an admin delete, a cascade), so the list endpoints read one row instead of counting
    500k boxes per request. A separate row, so that saving a ``Dataset`` can never write back stale counts.
    """

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, primary_key=True, related_name="stats")
    image_count = models.PositiveIntegerField(default=0)
    annotation_count = models.PositiveIntegerField(default=0)
    extent = models.GeometryField(
        srid=4326,
        null=True,
        blank=True,
        help_text="Envelope of the images' footprints (or locations where they have none).",
    )

    def __str__(self) -> str:
        return f"{self.dataset_id}: {self.image_count} images, {self.annotation_count} boxes"


# Object permissions with direct foreign keys (guardian): indexed joins instead of generic string keys.
class DatasetUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Dataset, on_delete=models.CASCADE)


class DatasetGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Dataset, on_delete=models.CASCADE)


class DatasetImport(models.Model):
    """Files uploaded through the API or the admin and imported by a worker: a COCO zip, or orthophotos with their
    annotated sites to cut into tiles; its target, progress and report.

    The upload waits in the storage (``imports/<key>/``, a random key) and is removed when the import ends, however
    it ends."""

    class Kind(models.TextChoices):
        COCO_ZIP = "coco_zip", "COCO zip"
        ORTHOPHOTO = "orthophoto", "Orthophoto tiling"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    key = models.CharField(max_length=32, unique=True, help_text="Random folder name of the uploaded archive.")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.COCO_ZIP)
    parameters = models.JSONField(default=dict, blank=True, help_text="Tiling: size, overlap, shares, files.")
    dataset = models.ForeignKey(
        Dataset,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="imports",
        help_text="The dataset imported into (a new one is set once it exists).",
    )
    new_dataset_name = models.CharField(max_length=200, blank=True, help_text="Name of the dataset to create.")
    add_classes = models.BooleanField(default=False, help_text="Add the archive's classes the dataset lacks.")
    coco_file = models.CharField(max_length=500, blank=True, help_text="The COCO file inside the archive.")
    layout = models.CharField(max_length=100, blank=True)
    archive_name = models.CharField(max_length=255, blank=True)
    archive_bytes = models.BigIntegerField(default=0)
    archive_members = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    items_total = models.PositiveIntegerField(default=0, help_text="Images listed by the COCO file.")
    items_done = models.PositiveIntegerField(default=0)
    images_imported = models.PositiveIntegerField(default=0)
    annotations_imported = models.PositiveIntegerField(default=0)
    classes_added = models.JSONField(default=list, blank=True)
    rejected = models.JSONField(default=list, blank=True, help_text="[{item, reason}] of every rejected item.")
    rejected_count = models.PositiveIntegerField(default=0)
    georeferenced = models.JSONField(
        default=list, blank=True, help_text="[{item, found}]: what each image's file told of its place and time."
    )
    georeferenced_count = models.PositiveIntegerField(default=0)
    stats = models.JSONField(default=dict, blank=True, help_text="Tiling: tiles looked at, kept, skipped, ...")
    error_message = models.TextField(blank=True)
    worker_process = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last progress report of the worker.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Import #{self.pk} of {self.archive_name or 'a zip'}"

    @property
    def target_name(self) -> str:
        return self.dataset.name if self.dataset is not None else self.new_dataset_name

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def percent(self) -> float:
        if self.status == self.Status.SUCCEEDED:
            return 100.0
        return round(100.0 * self.items_done / self.items_total, 1) if self.items_total else 0.0

    def eta_seconds(self, now) -> float | None:
        """Time left at the rate so far (None until some items are done, or once finished)."""
        if self.status != self.Status.RUNNING or not self.items_done or not self.started_at or not self.items_total:
            return None
        elapsed = (now - self.started_at).total_seconds()
        return round(elapsed / self.items_done * (self.items_total - self.items_done), 1)


def orthophoto_upload_to(instance: Orthophoto, filename: str) -> str:
    # The stored name is chosen by the service (a content hash), never the uploader's file name.
    return f"datasets/{instance.dataset_id}/orthophotos/{filename}"


class Orthophoto(models.Model):
    """A whole orthophoto (or a large drone photo) kept with a dataset, for detection runs over it: a GeoTIFF of
    8-bit grey, RGB or RGBA bands, georeferenced (any CRS, rotated geotransforms too) or in pixel coordinates only.
    Seen by whoever sees its dataset."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="orthophotos")
    name = models.CharField(max_length=255, help_text="As the operator knows it (an upload's file name).")
    file = models.FileField(upload_to=orthophoto_upload_to, max_length=500)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bands = models.PositiveSmallIntegerField()
    georeferenced = models.BooleanField(help_text="False: a photo without geotransform or CRS; pixel coordinates.")
    srid = models.IntegerField(null=True, blank=True, help_text="EPSG code of its CRS, where it has one.")
    srs_wkt = models.TextField(blank=True)
    geotransform = models.JSONField(null=True, blank=True, help_text="GDAL's six terms, rotation included.")
    pixel_size_m = models.FloatField(null=True, blank=True, help_text="Ground size of a pixel (metres).")
    footprint = models.PolygonField(srid=4326, null=True, blank=True, help_text="Its outline (WGS 84).")
    # On the ground, from the footprint: a Web Mercator pixel of 0.28 m is 0.19 m at 46 degrees north.
    gsd_m = gsd_field()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "sha256"], name="orthophoto_unique_content_per_dataset")
        ]

    def __str__(self) -> str:
        return self.name
