"""Urban flood command (issue #8): live depth reports, point status with the 30 cm closure rule, responsibilities
(rules in gis_service/rules/flood.toml, from 2021年城区防汛工作方案, seed L4005–L4367)."""
