resource "cp_backup_schedule" "nightly" {
  instance_id = cp_instance.orders.id
  name        = "nightly"
  cron        = "30 2 * * *" # minute hour day-of-month month day-of-week
  time_zone   = "Europe/Berlin"
  retention = {
    keep_last    = 7
    max_age_days = 30
  }
}
