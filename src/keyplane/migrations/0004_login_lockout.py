from tortoise import migrations
from tortoise.migrations import operations as ops
from keyplane.models.user import _login_failure_id
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('keyplane', '0003_templates_documents_activity')]

    initial = False

    operations = [
        ops.CreateModel(
            name='LoginFailure',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_login_failure_id, unique=True, db_index=True, max_length=32)),
                ('user', fields.ForeignKeyField('keyplane.User', source_field='user_id', db_constraint=True, to_field='id', related_name='login_failures', on_delete=OnDelete.CASCADE)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'login_failure', 'app': 'keyplane', 'indexes': [Index(fields=['user_id', 'at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='User',
            name='locked_until',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
