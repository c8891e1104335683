"""Environmental emergencies (issue #7): risk zones, incident assessment (air plume, river trace, radius),
grading per Appendix 1 of 廊政办字〔2021〕25号, incident records, key risk areas; see README.md here."""
