"""The Grand Canal corridor domain (廊政办字〔2021〕37号): zones, village remediation list, green-corridor width
check, farmland conflicts and siting verdicts; rules in gis_service/rules/canal.toml."""
