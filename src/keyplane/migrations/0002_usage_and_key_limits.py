from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('keyplane', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='UsageBucket',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key_id', fields.CharField(max_length=32)),
                ('environment_id', fields.CharField(max_length=32)),
                ('minute', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('requests', fields.IntField(default=0)),
                ('unauthorized', fields.IntField(default=0)),
                ('forbidden', fields.IntField(default=0)),
                ('rate_limited', fields.IntField(default=0)),
            ],
            options={'table': 'usage_bucket', 'app': 'keyplane', 'unique_together': (('key_id', 'minute'),), 'indexes': [Index(fields=['environment_id', 'minute'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='ApiKey',
            name='rate_limit_per_minute',
            field=fields.IntField(null=True),
        ),
    ]
