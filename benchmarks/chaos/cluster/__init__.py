"""The several-machines rehearsal (`turnout chaos --cluster`): hosts as network namespaces."""
