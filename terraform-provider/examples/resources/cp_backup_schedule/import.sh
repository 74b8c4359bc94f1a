# project/instance-id/schedule-id
terraform import cp_backup_schedule.nightly acme/01939d3e-8c4f-7b7a-9a52-6f1d1c0e5a10/01939d40-1b2c-7d3e-8f40-5a6b7c8d9e0f
