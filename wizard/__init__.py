"""The wizard: question model, questionary front-end, flows."""
