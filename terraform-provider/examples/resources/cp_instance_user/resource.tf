data "cp_catalog" "pg" {
  service = "postgresql"
}

# A read-only user for the reporting application; its role is one of the catalog's user_roles.
resource "cp_instance_user" "reporting" {
  instance_id = cp_instance.orders.id
  name        = "reporting"
  role        = "readonly" # data.cp_catalog.pg.services[0].user_roles: readwrite, readonly

  # Change this value (a date, a counter) to rotate the password in place.
  password_rotation = "2026-12"
}

# The application reads the password from the state (a sensitive value).
output "reporting_dsn" {
  value     = "postgresql://${cp_instance_user.reporting.name}:${cp_instance_user.reporting.password}@${cp_instance_user.reporting.host}:${cp_instance_user.reporting.port}/app"
  sensitive = true
}
