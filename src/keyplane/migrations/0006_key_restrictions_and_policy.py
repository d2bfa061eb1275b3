from tortoise import migrations
from tortoise.migrations import operations as ops
from keyplane.models.activity import ActivityKind
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('keyplane', '0005_idempotency_and_rotation')]

    initial = False

    operations = [
        ops.CreateModel(
            name='EnvironmentPolicy',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('environment', fields.OneToOneField('keyplane.Environment', source_field='environment_id', db_constraint=True, to_field='id', related_name='policy', on_delete=OnDelete.CASCADE)),
                ('require_expiry', fields.BooleanField(default=False)),
                ('max_lifetime_days', fields.IntField(null=True)),
                ('allowed_scopes', fields.CharField(default='', max_length=1024)),
            ],
            options={'table': 'environment_policy', 'app': 'keyplane', 'pk_attr': 'id', 'table_description': 'One row per environment that has a policy (no row: no rule at all).'},
            bases=['Model'],
        ),
        ops.AlterField(
            model_name='ActivityEvent',
            name='kind',
            field=fields.CharEnumField(description='KEY_CREATED: KEY_CREATED\nKEY_UPDATED: KEY_UPDATED\nKEY_ROTATED: KEY_ROTATED\nKEY_REVOKED: KEY_REVOKED\nKEY_DELETED: KEY_DELETED\nAUTH_FAILED: AUTH_FAILED\nRATE_LIMITED: RATE_LIMITED\nKEY_IP_DENIED: KEY_IP_DENIED\nMEMBER_INVITED: MEMBER_INVITED\nMEMBER_UPDATED: MEMBER_UPDATED\nMEMBER_REMOVED: MEMBER_REMOVED\nTEMPLATE_PUBLISHED: TEMPLATE_PUBLISHED\nDOCUMENT_FAILED: DOCUMENT_FAILED', enum_type=ActivityKind, max_length=32),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='allowed_cidrs',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='allowed_origins',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='extra_scopes',
            field=fields.CharField(null=True, max_length=1024),
        ),
    ]
