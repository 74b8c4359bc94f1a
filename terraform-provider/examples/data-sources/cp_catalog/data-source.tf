data "cp_catalog" "postgresql" {
  service = "postgresql"
}

output "postgresql_versions" {
  value = [for v in data.cp_catalog.postgresql.services[0].versions : v.version]
}
