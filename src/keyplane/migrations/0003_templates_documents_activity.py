from tortoise import migrations
from tortoise.migrations import operations as ops
from keyplane.models.activity import ActivityKind, _event_id
from keyplane.models.document import _document_id
from keyplane.models.template import TemplateFormat, _template_id, _version_id
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('keyplane', '0002_usage_and_key_limits')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ActivityEvent',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_event_id, unique=True, db_index=True, max_length=32)),
                ('project', fields.ForeignKeyField('keyplane.Project', source_field='project_id', db_constraint=True, to_field='id', related_name='activity', on_delete=OnDelete.CASCADE)),
                ('environment', fields.ForeignKeyField('keyplane.Environment', source_field='environment_id', null=True, db_constraint=True, to_field='id', related_name='activity', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(description='KEY_CREATED: KEY_CREATED\nKEY_UPDATED: KEY_UPDATED\nKEY_ROTATED: KEY_ROTATED\nKEY_REVOKED: KEY_REVOKED\nKEY_DELETED: KEY_DELETED\nAUTH_FAILED: AUTH_FAILED\nRATE_LIMITED: RATE_LIMITED\nMEMBER_INVITED: MEMBER_INVITED\nMEMBER_UPDATED: MEMBER_UPDATED\nMEMBER_REMOVED: MEMBER_REMOVED\nTEMPLATE_PUBLISHED: TEMPLATE_PUBLISHED\nDOCUMENT_FAILED: DOCUMENT_FAILED', enum_type=ActivityKind, max_length=32)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('actor', fields.CharField(max_length=255)),
                ('target', fields.CharField(max_length=255)),
                ('ip', fields.CharField(null=True, max_length=64)),
                ('count', fields.IntField(default=1)),
                ('aggregate_key', fields.CharField(null=True, unique=True, max_length=128)),
            ],
            options={'table': 'activity_event', 'app': 'keyplane', 'indexes': [Index(fields=['environment_id', 'at']), Index(fields=['project_id', 'at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Document',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_document_id, unique=True, db_index=True, max_length=32)),
                ('environment', fields.ForeignKeyField('keyplane.Environment', source_field='environment_id', db_constraint=True, to_field='id', related_name='documents', on_delete=OnDelete.CASCADE)),
                ('template_id', fields.CharField(max_length=32)),
                ('template_version', fields.IntField()),
                ('format', fields.CharEnumField(description='HTML: HTML\nMARKDOWN: MARKDOWN\nTEXT: TEXT', enum_type=TemplateFormat, max_length=16)),
                ('content', fields.TextField(unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('created_by', fields.ForeignKeyField('keyplane.User', source_field='created_by_id', db_constraint=True, to_field='id', related_name='documents', on_delete=OnDelete.RESTRICT)),
                ('created_by_key_id', fields.CharField(null=True, max_length=32)),
                ('auth_kind', fields.CharField(max_length=16)),
            ],
            options={'table': 'document', 'app': 'keyplane', 'indexes': [Index(fields=['environment_id', 'created_at']), Index(fields=['template_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Template',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_template_id, unique=True, db_index=True, max_length=32)),
                ('environment', fields.ForeignKeyField('keyplane.Environment', source_field='environment_id', db_constraint=True, to_field='id', related_name='templates', on_delete=OnDelete.CASCADE)),
                ('project', fields.ForeignKeyField('keyplane.Project', source_field='project_id', db_constraint=True, to_field='id', related_name='templates', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=64)),
                ('format', fields.CharEnumField(description='HTML: HTML\nMARKDOWN: MARKDOWN\nTEXT: TEXT', enum_type=TemplateFormat, max_length=16)),
                ('content', fields.TextField(unique=False)),
                ('latest_version', fields.IntField(default=0)),
                ('published_version', fields.IntField(null=True)),
                ('has_unpublished_changes', fields.BooleanField(default=True)),
                ('created_by', fields.ForeignKeyField('keyplane.User', source_field='created_by_id', db_constraint=True, to_field='id', related_name='created_templates', on_delete=OnDelete.RESTRICT)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'template', 'app': 'keyplane', 'unique_together': (('environment', 'name'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TemplateVersion',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_version_id, unique=True, db_index=True, max_length=32)),
                ('template', fields.ForeignKeyField('keyplane.Template', source_field='template_id', db_constraint=True, to_field='id', related_name='versions', on_delete=OnDelete.CASCADE)),
                ('version', fields.IntField()),
                ('content', fields.TextField(unique=False)),
                ('published_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('published_by', fields.ForeignKeyField('keyplane.User', source_field='published_by_id', db_constraint=True, to_field='id', related_name='published_versions', on_delete=OnDelete.RESTRICT)),
            ],
            options={'table': 'template_version', 'app': 'keyplane', 'unique_together': (('template', 'version'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Invitation',
            name='invited_by',
            field=fields.ForeignKeyField('keyplane.User', source_field='invited_by_id', null=True, db_constraint=True, to_field='id', related_name='sent_invitations', on_delete=OnDelete.SET_NULL),
        ),
    ]
