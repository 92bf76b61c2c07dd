"""Dataset counts and extent kept by triggers, so that listing datasets never counts their boxes.

Statement-level triggers with transition tables: a bulk insert of 2,000 boxes costs one UPDATE of the stats row,
not 2,000. Django deletes rows children first (boxes, then images, then the dataset), so a box's image is still
there when the box's DELETE trigger runs; once the stats row itself is gone, the UPDATEs simply match nothing.
"""

import django.contrib.gis.db.models.fields
import django.db.models.deletion
from django.db import migrations, models

STATS = "datasets_datasetstats"
IMAGE = "datasets_datasetimage"
BOX = "datasets_annotation"

FORWARD = f"""
CREATE FUNCTION datasets_stats_recompute(ids bigint[]) RETURNS void LANGUAGE sql AS $$
    UPDATE {STATS} s SET
        image_count = (SELECT count(*) FROM {IMAGE} i WHERE i.dataset_id = s.dataset_id),
        annotation_count = (SELECT count(*) FROM {BOX} a JOIN {IMAGE} i ON i.id = a.image_id
                            WHERE i.dataset_id = s.dataset_id),
        extent = (SELECT ST_Envelope(ST_Collect(COALESCE(i.footprint, i.location))) FROM {IMAGE} i
                  WHERE i.dataset_id = s.dataset_id)
    WHERE s.dataset_id = ANY(ids);
$$;

CREATE FUNCTION datasets_stats_dataset_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {STATS} (dataset_id, image_count, annotation_count) SELECT id, 0, 0 FROM new_rows
    ON CONFLICT (dataset_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION datasets_stats_images_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE {STATS} s SET
            image_count = s.image_count + c.n,
            extent = CASE WHEN s.extent IS NULL THEN c.e WHEN c.e IS NULL THEN s.extent
                          ELSE ST_Envelope(ST_Collect(s.extent, c.e)) END
        FROM (SELECT dataset_id, count(*) AS n, ST_Envelope(ST_Collect(COALESCE(footprint, location))) AS e
              FROM new_rows GROUP BY dataset_id) c
        WHERE s.dataset_id = c.dataset_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE {STATS} s SET image_count = s.image_count - c.n
        FROM (SELECT dataset_id, count(*) AS n FROM old_rows GROUP BY dataset_id) c
        WHERE s.dataset_id = c.dataset_id;
        -- An extent cannot shrink incrementally: recompute it where a placed image went.
        UPDATE {STATS} s SET extent = (SELECT ST_Envelope(ST_Collect(COALESCE(i.footprint, i.location)))
                                       FROM {IMAGE} i WHERE i.dataset_id = s.dataset_id)
        WHERE s.dataset_id IN (SELECT dataset_id FROM old_rows
                               WHERE footprint IS NOT NULL OR location IS NOT NULL);
    ELSE  -- UPDATE: only a move between datasets or a new placement changes anything
        PERFORM datasets_stats_recompute(ARRAY(
            SELECT DISTINCT unnest(ARRAY[o.dataset_id, n.dataset_id]) FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE o.dataset_id IS DISTINCT FROM n.dataset_id OR o.footprint IS DISTINCT FROM n.footprint
               OR o.location IS DISTINCT FROM n.location));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION datasets_stats_boxes_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Each branch names only the transition tables its event has.
    IF TG_OP = 'INSERT' THEN
        UPDATE {STATS} s SET annotation_count = s.annotation_count + c.n
        FROM (SELECT i.dataset_id, count(*) AS n FROM new_rows b JOIN {IMAGE} i ON i.id = b.image_id
              GROUP BY i.dataset_id) c
        WHERE s.dataset_id = c.dataset_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE {STATS} s SET annotation_count = s.annotation_count - c.n
        FROM (SELECT i.dataset_id, count(*) AS n FROM old_rows b JOIN {IMAGE} i ON i.id = b.image_id
              GROUP BY i.dataset_id) c
        WHERE s.dataset_id = c.dataset_id;
    ELSE  -- UPDATE: only boxes moved to another image can change a dataset's count
        UPDATE {STATS} s SET annotation_count = s.annotation_count + c.n
        FROM (SELECT dataset_id, sum(n) AS n FROM (
                  SELECT oi.dataset_id, -1 AS n FROM old_rows o JOIN new_rows b ON b.id = o.id
                      JOIN {IMAGE} oi ON oi.id = o.image_id WHERE o.image_id <> b.image_id
                  UNION ALL
                  SELECT ni.dataset_id, 1 FROM old_rows o JOIN new_rows b ON b.id = o.id
                      JOIN {IMAGE} ni ON ni.id = b.image_id WHERE o.image_id <> b.image_id) moved
              GROUP BY dataset_id) c
        WHERE s.dataset_id = c.dataset_id AND c.n <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER datasets_stats_dataset_insert AFTER INSERT ON datasets_dataset
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_dataset_inserted();
CREATE TRIGGER datasets_stats_image_insert AFTER INSERT ON {IMAGE}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_images_changed();
CREATE TRIGGER datasets_stats_image_delete AFTER DELETE ON {IMAGE}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_images_changed();
CREATE TRIGGER datasets_stats_image_update AFTER UPDATE ON {IMAGE}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_images_changed();
CREATE TRIGGER datasets_stats_box_insert AFTER INSERT ON {BOX}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_boxes_changed();
CREATE TRIGGER datasets_stats_box_delete AFTER DELETE ON {BOX}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_boxes_changed();
CREATE TRIGGER datasets_stats_box_update AFTER UPDATE ON {BOX}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION datasets_stats_boxes_changed();

INSERT INTO {STATS} (dataset_id, image_count, annotation_count) SELECT id, 0, 0 FROM datasets_dataset;
SELECT datasets_stats_recompute(ARRAY(SELECT id FROM datasets_dataset));
"""

BACKWARD = f"""
DROP TRIGGER IF EXISTS datasets_stats_dataset_insert ON datasets_dataset;
DROP TRIGGER IF EXISTS datasets_stats_image_insert ON {IMAGE};
DROP TRIGGER IF EXISTS datasets_stats_image_delete ON {IMAGE};
DROP TRIGGER IF EXISTS datasets_stats_image_update ON {IMAGE};
DROP TRIGGER IF EXISTS datasets_stats_box_insert ON {BOX};
DROP TRIGGER IF EXISTS datasets_stats_box_delete ON {BOX};
DROP TRIGGER IF EXISTS datasets_stats_box_update ON {BOX};
DROP FUNCTION IF EXISTS datasets_stats_boxes_changed();
DROP FUNCTION IF EXISTS datasets_stats_images_changed();
DROP FUNCTION IF EXISTS datasets_stats_dataset_inserted();
DROP FUNCTION IF EXISTS datasets_stats_recompute(bigint[]);
"""


class Migration(migrations.Migration):

    dependencies = [
        ("datasets", "0002_alter_dataset_options_datasetgroupobjectpermission_and_more"),
    ]

    operations = [
        migrations.CreateModel(
            name="DatasetStats",
            fields=[
                ("dataset", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                                 related_name="stats", serialize=False, to="datasets.dataset")),
                ("image_count", models.PositiveIntegerField(default=0)),
                ("annotation_count", models.PositiveIntegerField(default=0)),
                ("extent", django.contrib.gis.db.models.fields.GeometryField(
                    blank=True, help_text="Envelope of the images' footprints (or locations where they have none).",
                    null=True, srid=4326)),
            ],
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
