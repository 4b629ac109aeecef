mod doctor;
